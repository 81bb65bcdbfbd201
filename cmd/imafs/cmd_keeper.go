package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/imafs/imafs/fanotify"
	"github.com/imafs/imafs/sdnotify"
)

// `imafs fanotify-keeper` holds the fanotify groups of `imafs serve
// --fanotify` across a daemon's crash or upgrade (see fanotify.RunKeeper).
// The daemon starts it when none answers on its socket; under systemd,
// contrib/systemd/imafs-fanotify-keeper.service runs it in a unit of its
// own so that a crash of the daemon's unit does not take it down.

func runKeeper(args []string) int {
	fl := flag.NewFlagSet("imafs fanotify-keeper", flag.ContinueOnError)
	socket := fl.String("socket", "", "the keeper's socket (in the daemon's state directory)")
	grace := fl.Duration("grace", 30*time.Second, "release the groups when no daemon has been connected for this long")
	readyFD := fl.Int("ready-fd", 0, "write \"ready\\n\" to this descriptor once the socket accepts connections")
	logFormat := fl.String("log-format", "text", "log format (text or json)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *socket == "" || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: imafs fanotify-keeper --socket PATH [--grace DURATION] [--ready-fd N]")
		return 2
	}
	log := logrus.New()
	if *logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ready := func() {
		if *readyFD > 0 {
			f := os.NewFile(uintptr(*readyFD), "ready")
			fmt.Fprintln(f, "ready")
			f.Close()
		}
		// Under systemd (imafs-fanotify-keeper.service, Type=notify).
		if err := sdnotify.FromEnv().Notify(sdnotify.Ready); err != nil {
			log.WithError(err).Warn("sd_notify")
		}
	}
	if err := fanotify.RunKeeper(ctx, *socket, *grace, log, ready); err != nil {
		log.WithError(err).Error("fanotify keeper")
		return 1
	}
	return 0
}
