package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestSessionErrors: the kernel's errno class of each failing write, and
// that the failure makes the whole session fail.
func TestSessionErrors(t *testing.T) {
	file := func(content string) func(string) ([]byte, error) {
		return func(string) ([]byte, error) { return []byte(content), nil }
	}
	tests := []struct {
		name  string
		room  *Limits
		read  func(string) ([]byte, error)
		write string
		want  error
	}{
		{"uid overflows u64", nil, nil, "measure uid=99999999999999999999999\n", ErrRange},
		{"fowner overflows u64", nil, nil, "measure fowner>184467440737095516160\n", ErrRange},
		{"fsmagic overflows u64", nil, nil, "measure fsmagic=0x1ffffffffffffffff\n", ErrRange},
		{"uid beyond u32 only", nil, nil, "measure uid=4294967296\n", ErrInvalid},
		{"uid not a number", nil, nil, "measure uid=x\n", ErrInvalid},
		{"pcr overflow is EINVAL", nil, nil, "measure pcr=99999999999999999999999\n", ErrInvalid},
		{"loaded uid overflow", nil, file("measure uid=99999999999999999999999\n"), "/p\n", ErrRange},
		{"rules limit", &Limits{MaxRules: 1, MaxBytes: 1 << 20}, file("measure\nmeasure\n"), "/p\n", ErrNoSpace},
		{"bytes limit", &Limits{MaxRules: 10, MaxBytes: 9}, nil, "measure func=BPRM_CHECK\n", ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Session{Room: tt.room, ReadFile: tt.read}
			_, err := s.Write([]byte(tt.write), 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("write %q: %v, want %v", tt.write, err, tt.want)
			}
			if tt.want != ErrRange && errors.Is(err, ErrRange) {
				t.Errorf("%v is also ERANGE", err)
			}
			if _, err := s.Commit(); !errors.Is(err, ErrFailed) {
				t.Errorf("Commit: %v, want ErrFailed", err)
			}
		})
	}
}

// TestSessionRoomStopsGrowth: a session never holds more than its room,
// however much it is given.
func TestSessionRoomStopsGrowth(t *testing.T) {
	big := strings.Repeat("measure func=BPRM_CHECK\n", 100000)
	s := &Session{Room: &Limits{MaxRules: 10, MaxBytes: 1 << 20}, ReadFile: func(string) ([]byte, error) { return []byte(big), nil }}
	if _, err := s.Write([]byte("/big\n"), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("load of 100000 rules with room for 10: %v", err)
	}
	if n := len(s.Rules()); n != 10 {
		t.Errorf("session holds %d rules, want 10", n)
	}
}

func TestLimits(t *testing.T) {
	r := mustRule(t, "measure func=BPRM_CHECK")
	tests := []struct {
		l     Limits
		rules int
		bytes int64
		fits  bool
	}{
		{DefaultLimits(), DefaultMaxRules, DefaultMaxBytes, true},
		{DefaultLimits(), DefaultMaxRules + 1, 0, false},
		{DefaultLimits(), 0, DefaultMaxBytes + 1, false},
		{Limits{}.OrDefault(), 1, 1, true},
	}
	for _, tt := range tests {
		if got := tt.l.Fits(tt.rules, tt.bytes); got != tt.fits {
			t.Errorf("%+v.Fits(%d, %d) = %v", tt.l, tt.rules, tt.bytes, got)
		}
	}
	if got, want := RuleBytes(r), int64(len("measure func=BPRM_CHECK \n")); got != want {
		t.Errorf("RuleBytes = %d, want %d", got, want)
	}
	if got := (Policy{r, r}).Bytes(); got != 2*RuleBytes(r) {
		t.Errorf("Bytes = %d", got)
	}
}

func mustRule(t *testing.T, line string) *Rule {
	t.Helper()
	rules, err := Parse(line + "\n")
	if err != nil || len(rules) != 1 {
		t.Fatalf("parse %q: %v", line, err)
	}
	return rules[0]
}
