package imans

import "testing"

type countingObserver struct{ attached, detached int }

func (o *countingObserver) Attached(*Namespace) { o.attached++ }
func (o *countingObserver) Detached(*Namespace) { o.detached++ }

// TestAddObserverUndo: the function AddObserver returns removes exactly
// that observer, once (a component stopped and started again, as by an
// upgrade's rollback, leaves one registration, not two).
func TestAddObserverUndo(t *testing.T) {
	r, err := NewRegistry(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b := &countingObserver{}, &countingObserver{}
	removeA := r.AddObserver(a)
	removeB := r.AddObserver(b)
	removeA()
	removeA() // harmless
	r.mu.Lock()
	got := append([]Observer(nil), r.observers...)
	r.mu.Unlock()
	if len(got) != 1 || got[0] != b {
		t.Fatalf("observers after removing a: %v, want [b]", got)
	}
	removeB()
	removeA = r.AddObserver(a)
	r.mu.Lock()
	n := len(r.observers)
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d observers after stop and start again, want 1", n)
	}
	removeA()
}
