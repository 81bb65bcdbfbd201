package control

import (
	"errors"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/vtpm"
)

// codes are the sentinel errors that survive the socket: a failure that
// wraps one carries its code in Response.Code, and the client's *Error
// unwraps to it again (errors.Is(err, imans.ErrNotFound)).
var codes = []struct {
	code string
	err  error
}{
	{"not-found", imans.ErrNotFound},
	{"exists", imans.ErrExists},
	{"host-pidns", imans.ErrHostPidNS},
	{"invalid-id", imans.ErrInvalidID},
	{"detached", imans.ErrDetached},
	{"not-running", imans.ErrNotRunning},
	{"frozen", imans.ErrFrozen},
	{"empty-policy", imans.ErrEmptyPolicy},
	{"no-vtpm", vtpm.ErrUnknownNamespace},
}

// CodeOf returns the code of the first sentinel err wraps ("" for none).
func CodeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// errorOf returns the sentinel of code (nil for an unknown one).
func errorOf(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
