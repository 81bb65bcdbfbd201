package kernelsrc

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imafs/imafs/measurelog"
)

// How a container's list renders the kernel's entries (Options.ContainerTemplate).
const (
	// ContainerNG renders each kernel entry without its ns field, as the
	// template its other fields make: ima-nsreg (d-ng|n-ng|ns) becomes
	// ima-ng, a custom d-ng|n-ng|sig|ns ima-sig. A verifier that knows only
	// the kernel's templates (Keylime, evmctl) reads the container's list.
	ContainerNG = "ima-ng"
	// ContainerNS keeps the kernel's entries unchanged (ima-nsreg), as the
	// host list has them.
	ContainerNS = "ima-nsreg"
	// containerNSv1 is ContainerNS's name before the series' template was
	// renamed (v1's ima-ns); a shipped flag value, still accepted.
	containerNSv1 = "ima-ns"
)

// ParseContainerTemplate checks a --kernel-container-template value; ""
// selects ContainerNG, "ima-ns" (the shipped spelling) ContainerNS.
func ParseContainerTemplate(s string) (string, error) {
	switch s {
	case "", ContainerNG:
		return ContainerNG, nil
	case ContainerNS, containerNSv1:
		return ContainerNS, nil
	}
	return "", fmt.Errorf("kernel container template %q: want %s or %s (or %s, its former name)", s, ContainerNG, ContainerNS, containerNSv1)
}

// ContainerView returns the entry a container's list holds for the kernel
// entry e in the ContainerNG rendering: e without its ns field, named as the
// kernel names the template of the remaining fields (a builtin template's
// name, else the custom format "f1|f2|..."). The digest, name, signature and
// every other field are e's, byte for byte; a violation stays a violation.
// ok is false, and e is to be kept as it is, when e has no ns field, when
// ns is its only field, or when the rest would be the legacy "ima" template
// (d|n), whose n field the binary list carries differently.
func ContainerView(e *measurelog.Entry) (view *measurelog.Entry, ok bool) {
	t, err := measurelog.LookupTemplate(e.Template)
	if err != nil || len(t.Fields) != len(e.Fields) {
		return nil, false
	}
	i := slices.Index(t.Fields, "ns")
	if i < 0 || len(t.Fields) == 1 {
		return nil, false
	}
	ids := slices.Delete(slices.Clone(t.Fields), i, i+1)
	name := templateName(ids)
	if name == measurelog.TemplateIMA {
		return nil, false
	}
	fields := slices.Delete(slices.Clone(e.Fields), i, i+1)
	return &measurelog.Entry{PCR: e.PCR, Template: name, Fields: fields, Violation: e.Violation}, true
}

// templateName is the name the kernel gives a template of fields ids: the
// builtin one with that format (lookup_template_desc matches a format too),
// else the format itself.
func templateName(ids []string) string {
	for _, name := range measurelog.Templates() {
		t, err := measurelog.LookupTemplate(name)
		if err == nil && !slices.Contains(t.Fields, "ns") && slices.Equal(t.Fields, ids) {
			return name
		}
	}
	return strings.Join(ids, "|")
}
