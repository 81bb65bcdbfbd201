package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/control"
	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/nriplugin"
)

func runNRIPlugin(args []string) int {
	fl, socket := clientFlags("nri-plugin")
	self, _ := os.Executable()
	hookPath := fl.String("hook-path", self, "the imafs binary the hooks run, as the host sees it")
	wrapper := fl.Bool("hook-wrapper", false, "--hook-path is a wrapper run as `NAME STAGE` (the DaemonSet's fail-open imafs-hook)")
	nriSocket := fl.String("nri-socket", "", "NRI's socket (default NRI's, /var/run/nri/nri.sock)")
	name := fl.String("name", "imafs", "plugin name")
	idx := fl.String("idx", "10", "plugin index (order among NRI plugins)")
	level := fl.String("log-level", "info", "log level")
	if err := fl.Parse(args); err != nil || fl.NArg() != 0 {
		return 2
	}
	log := logrus.New()
	if l, err := logrus.ParseLevel(*level); err == nil {
		log.SetLevel(l)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	client := control.NewClient(*socket)
	err := nriplugin.Run(ctx, nriplugin.Options{
		HookPath: *hookPath, Socket: *socket, Wrapper: *wrapper, Name: *name, Index: *idx, NRISocket: *nriSocket, Log: log,
		Detach: func(ctx context.Context, id string) error {
			_, err := client.Call(ctx, &control.Request{Op: control.OpDetach, ID: id})
			if errors.Is(err, imans.ErrNotFound) {
				return fmt.Errorf("%s: %w", id, nriplugin.ErrNotAttached)
			}
			return err
		},
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "imafs nri-plugin:", err)
		return 1
	}
	return 0
}
