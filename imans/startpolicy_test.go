package imans

import (
	"errors"
	"testing"

	"github.com/imafs/imafs/integration/harness"
	"github.com/imafs/imafs/policy"
)

// TestStartPolicy: Options.StartPolicy's rules are a container's first load
// (not the default policy, saved); nil keeps the default; an error, or
// rules beyond the limits, fail the attach with nothing registered.
func TestStartPolicy(t *testing.T) {
	needRoot(t)
	errRefused := errors.New("refused")
	start := map[string]string{"given": "measure func=BPRM_CHECK\n", "big": "measure func=BPRM_CHECK\nmeasure func=FILE_CHECK\nmeasure func=MMAP_CHECK\n"}
	r := newTestRegistry(t, Options{
		StateDir:               t.TempDir(),
		DefaultContainerPolicy: mustParse(t, "measure func=FILE_CHECK\n"),
		PolicyLimits:           policy.Limits{MaxRules: 2},
		StartPolicy: func(id string, _ []byte) (policy.Policy, error) {
			if id == "refused" {
				return nil, errRefused
			}
			if text, ok := start[id]; ok {
				return mustParse(t, text), nil
			}
			return nil, nil
		},
	})
	for _, tc := range []struct {
		id      string
		wantErr error
		policy  string
		dflt    bool
	}{
		{"given", nil, "measure func=BPRM_CHECK \n", false},
		{"default", nil, "measure func=FILE_CHECK \n", true},
		{"refused", errRefused, "", false},
		{"big", policy.ErrNoSpace, "", false},
	} {
		ns, err := r.Attach(tc.id, harness.StartSleeper(t).Pid, []byte(`{}`))
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: attach error %v, want %v", tc.id, err, tc.wantErr)
			}
			if _, ok := r.Get(tc.id); ok {
				t.Errorf("%s: registered after a failed attach", tc.id)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if got := ns.PolicyText(); got != tc.policy || ns.DefaultPolicyActive() != tc.dflt {
			t.Errorf("%s: policy %q (default %v), want %q (default %v)", tc.id, got, ns.DefaultPolicyActive(), tc.policy, tc.dflt)
		}
	}
}
