package control

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/imafs/imafs/imans"
	"github.com/imafs/imafs/vtpm"
)

// TestErrorCodes: a sentinel error wrapped by a handler's failure comes
// back to the client as the same sentinel (errors.Is), not as text.
func TestErrorCodes(t *testing.T) {
	c, _ := serve(t, func(ctx context.Context, req *Request, rw *ReplyWriter) {
		for _, x := range codes {
			if x.code == req.ID {
				rw.Fail(fmt.Errorf("namespace c1: %w", x.err))
				return
			}
		}
		rw.Fail(errors.New("plain failure"))
	})
	for _, tc := range []struct {
		code string
		want error
	}{
		{"not-found", imans.ErrNotFound},
		{"exists", imans.ErrExists},
		{"frozen", imans.ErrFrozen},
		{"no-vtpm", vtpm.ErrUnknownNamespace},
		{"other", nil},
	} {
		_, err := c.Call(context.Background(), &Request{Op: OpDetach, ID: tc.code})
		var cerr *Error
		if !errors.As(err, &cerr) {
			t.Fatalf("%s: %v, want a *control.Error", tc.code, err)
		}
		if tc.want == nil {
			if cerr.Code != "" || errors.Is(err, imans.ErrNotFound) {
				t.Errorf("%s: code %q, want none", tc.code, cerr.Code)
			}
			continue
		}
		if !errors.Is(err, tc.want) || cerr.Code != tc.code {
			t.Errorf("%s: %v (code %q), want errors.Is %v", tc.code, err, cerr.Code, tc.want)
		}
		if tc.want != imans.ErrNotFound && errors.Is(err, imans.ErrNotFound) {
			t.Errorf("%s: also matches ErrNotFound", tc.code)
		}
	}
}
