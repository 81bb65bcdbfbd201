package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/imans"
)

// clientFlags: --socket defaults to $IMAFS_SOCKET, else the default path
// (an OCI hook's "env" can point a hooks.d file at another daemon).
func clientFlags(name string) (*flag.FlagSet, *string) {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	def := control.DefaultSocket
	if s := os.Getenv("IMAFS_SOCKET"); s != "" {
		def = s
	}
	socket := fl.String("socket", def, "daemon control socket (default $IMAFS_SOCKET if set)")
	return fl, socket
}

// bundleConfig reads a bundle's config.json and returns its bytes and the
// host path of its root filesystem.
func bundleConfig(bundle string) ([]byte, string, error) {
	cfgPath := filepath.Join(bundle, "config.json")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: %w", bundle, err)
	}
	var spec struct {
		Root *struct {
			Path string `json:"path"`
		} `json:"root"`
	}
	if err := json.Unmarshal(cfg, &spec); err != nil {
		return nil, "", fmt.Errorf("bundle %s: config.json: %w", bundle, err)
	}
	rootfs := ""
	if spec.Root != nil && spec.Root.Path != "" {
		rootfs = spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(bundle, rootfs)
		}
		rootfs, err = filepath.Abs(rootfs)
		if err != nil {
			return nil, "", fmt.Errorf("bundle %s: root path: %w", bundle, err)
		}
	}
	return cfg, rootfs, nil
}

func attachRequest(id string, pid int, bundle string) (*control.Request, error) {
	req := &control.Request{Op: control.OpAttach, ID: id, Pid: pid}
	if bundle != "" {
		abs, err := filepath.Abs(bundle)
		if err != nil {
			return nil, err
		}
		cfg, rootfs, err := bundleConfig(abs)
		if err != nil {
			return nil, err
		}
		req.OCIConfig, req.Rootfs = cfg, rootfs
	}
	return req, nil
}

func runAttach(args []string) int {
	fl, socket := clientFlags("attach")
	pid := fl.Int("pid", 0, "host pid of the container's init (required)")
	id := fl.String("id", "", "container id (default pid<PID>)")
	bundle := fl.String("bundle", "", "OCI bundle: its config.json is measured (ima-buf oci-config)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *pid <= 0 || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imafs attach --pid PID [--id ID] [--bundle DIR] [--socket PATH]")
		return 2
	}
	req, err := attachRequest(*id, *pid, *bundle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs attach:", err)
		return 1
	}
	resp, err := control.NewClient(*socket).Call(context.Background(), req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs attach:", err)
		return 1
	}
	fmt.Printf("attached %s (pid %d, %s) at %s\n", resp.Namespace.ID, resp.Namespace.Pid, resp.Namespace.Namespace, resp.Namespace.Mount)
	return 0
}

func runDetach(args []string) int {
	fl, socket := clientFlags("detach")
	id := fl.String("id", "", "container id (required)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *id == "" || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imafs detach --id ID [--socket PATH]")
		return 2
	}
	if _, err := control.NewClient(*socket).Call(context.Background(), &control.Request{Op: control.OpDetach, ID: *id}); err != nil {
		fmt.Fprintln(os.Stderr, "imafs detach:", err)
		return 1
	}
	return 0
}

// ociState is the state an OCI runtime passes to hooks on stdin.
type ociState struct {
	OCIVersion string `json:"ociVersion"`
	ID         string `json:"id"`
	Status     string `json:"status"`
	Pid        int    `json:"pid"`
	Bundle     string `json:"bundle"`
}

// runOCIHook: `imafs oci-hook [STAGE]`. Without STAGE the state's status
// decides: "stopped" (or no pid) detaches, anything else attaches.
func runOCIHook(args []string) int {
	fl, socket := clientFlags("oci-hook")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	stage := fl.Arg(0)
	data, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs oci-hook: read state:", err)
		return 1
	}
	var st ociState
	if err := json.Unmarshal(data, &st); err != nil {
		fmt.Fprintln(os.Stderr, "imafs oci-hook: decode state:", err)
		return 1
	}
	if st.ID == "" {
		fmt.Fprintln(os.Stderr, "imafs oci-hook: state has no id")
		return 1
	}
	detach := false
	switch stage {
	case "poststop":
		detach = true
	case "createRuntime", "prestart", "createContainer":
	case "":
		detach = st.Status == "stopped" || st.Pid == 0
	default:
		fmt.Fprintf(os.Stderr, "imafs oci-hook: unknown stage %q\n", stage)
		return 2
	}
	client := control.NewClient(*socket)
	if detach {
		_, err := client.Call(context.Background(), &control.Request{Op: control.OpDetach, ID: st.ID})
		if err != nil && !errors.Is(err, imans.ErrNotFound) {
			fmt.Fprintln(os.Stderr, "imafs oci-hook: detach:", err)
			return 1
		}
		return 0
	}
	req, err := attachRequest(st.ID, st.Pid, st.Bundle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imafs oci-hook:", err)
		return 1
	}
	if _, err := client.Call(context.Background(), req); err != nil {
		fmt.Fprintln(os.Stderr, "imafs oci-hook: attach:", err)
		return 1
	}
	return 0
}
