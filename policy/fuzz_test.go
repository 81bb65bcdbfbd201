package policy

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRule: the parser never panics; an accepted rule validates, its
// String re-parses to the same String, and Match and Session handle it.
//
// Two kernel read-backs do not re-parse, and the kernel behaves the same:
// ids >= 2^31 print as negative numbers ("uid=-2"), and sigv3 rules print
// "appraise_type=sigv3 digest_type=verity" while the parser wants
// digest_type=verity first. Those are exempt from the re-parse check.
//
//	go test ./policy -run '^$' -fuzz FuzzParseRule -fuzztime 30s
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"measure func=BPRM_CHECK mask=MAY_EXEC",
		"dont_measure fsmagic=0x9fa0",
		"measure func=FILE_CHECK mask=^MAY_READ euid=0",
		"appraise func=BPRM_CHECK digest_type=verity appraise_type=sigv3",
		"measure func=KEY_CHECK keyrings=.ima|.evm pcr=11 uid=0",
		"measure uid=0 euid=0",
		"measure obj_type=foo_t",
		"# comment",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseRule(line)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			if r != nil {
				t.Fatal("rule and error")
			}
			return
		}
		if r == nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted rule %q does not validate: %v", r, err)
		}
		s := r.String()
		if !strings.HasSuffix(s, " ") || strings.Contains(s, "\n") {
			t.Fatalf("String %q", s)
		}
		if !negativeID(r) && !(r.DigSigRequired && r.VerityRequired) {
			r2, err := ParseRule(s)
			if err != nil {
				t.Fatalf("String %q of %q does not re-parse: %v", s, line, err)
			}
			if s2 := r2.String(); s2 != s {
				t.Fatalf("re-parse of %q gives %q", s, s2)
			}
		}
		Policy{r}.Match(Event{Func: r.Func, Mask: r.Mask, FSMagic: r.FSMagic, FSName: r.FSName})
		if len(line) < PageSize-1 && !strings.ContainsAny(line, "\n\x00") {
			sess := &Session{}
			if n, err := sess.Write([]byte(line), 0); err != nil || n != len(line)+1 {
				t.Fatalf("Session.Write(%q) = %d, %v", line, n, err)
			}
		}
	})
}

func negativeID(r *Rule) bool {
	for _, c := range []IDCond{r.UID, r.EUID, r.GID, r.EGID, r.FOwner, r.FGroup} {
		if c.Set() && c.ID >= 1<<31 {
			return true
		}
	}
	return false
}

// FuzzSessionWrite: a write session never panics, never reports more than
// the kernel could (the cut write plus one), and fails only with errors
// the file system can map to an errno.
//
//	go test ./policy -run '^$' -fuzz FuzzSessionWrite -fuzztime 30s
func FuzzSessionWrite(f *testing.F) {
	f.Add([]byte("measure func=BPRM_CHECK\n"), int64(0), []byte("dont_measure fsmagic=0x9fa0"))
	f.Add([]byte("# comment\nmeasure\n"), int64(0), []byte("\n"))
	f.Add([]byte("/etc/ima/policy\n"), int64(0), []byte("measure\n"))
	f.Add([]byte("measure\r\n"), int64(3), []byte("measure obj_type=x\n"))
	f.Fuzz(func(t *testing.T, first []byte, off int64, second []byte) {
		s := &Session{ReadFile: func(string) ([]byte, error) { return second, nil }}
		for _, w := range []struct {
			p   []byte
			off int64
		}{{first, off}, {second, 0}} {
			n, err := s.Write(w.p, w.off)
			if err != nil {
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrAccess) {
					t.Fatalf("Write(%q, %d): unmapped error %v", w.p, w.off, err)
				}
				continue
			}
			limit := len(w.p)
			if limit > PageSize-1 {
				limit = PageSize - 1
			}
			if n < 1 || n > limit+1 {
				t.Fatalf("Write(%q, %d) = %d", w.p, w.off, n)
			}
		}
		rules, err := s.Commit()
		if err == nil && len(rules) == 0 || err != nil && rules != nil {
			t.Fatalf("Commit = %v, %v", rules, err)
		}
	})
}
