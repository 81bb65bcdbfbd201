package measurelog

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// fieldKind is how the kernel stores and prints a template field
// (enum data_formats in security/integrity/ima/ima_template_lib.c).
type fieldKind uint8

const (
	kindDigest             fieldKind = iota // "d": raw digest, printed as hex
	kindDigestWithAlgo                      // "d-ng", "d-modsig": "<algo>:\0" + digest
	kindDigestWithTypeAlgo                  // "d-ngv2": "<ima|verity>:<algo>:\0" + digest
	kindString                              // "n", "n-ng", "xattrnames", "ns": text + NUL, printed up to the NUL
	kindHex                                 // "sig", "buf", "modsig", "evmsig", "xattrlengths", "xattrvalues"
	kindUint                                // "iuid", "igid", "imode": native (little-endian) integer, printed in decimal
)

// fieldKinds lists every field the kernel's supported_fields[] knows, plus
// imafs's own "ns".
var fieldKinds = map[string]fieldKind{
	"d":            kindDigest,
	"n":            kindString,
	"d-ng":         kindDigestWithAlgo,
	"d-ngv2":       kindDigestWithTypeAlgo,
	"n-ng":         kindString,
	"sig":          kindHex,
	"buf":          kindHex,
	"d-modsig":     kindDigestWithAlgo,
	"modsig":       kindHex,
	"evmsig":       kindHex,
	"iuid":         kindUint,
	"igid":         kindUint,
	"imode":        kindUint,
	"xattrnames":   kindString,
	"xattrlengths": kindHex,
	"xattrvalues":  kindHex,
	"ns":           kindString,
}

// Template names.
const (
	TemplateIMA       = "ima"
	TemplateIMANG     = "ima-ng"
	TemplateIMASig    = "ima-sig"
	TemplateIMANGv2   = "ima-ngv2"
	TemplateIMASigv2  = "ima-sigv2"
	TemplateIMABuf    = "ima-buf"
	TemplateIMAModsig = "ima-modsig"
	TemplateEVMSig    = "evm-sig"
	// TemplateIMANS is imafs's own namespace-tagged template d-ng|n-ng|ns,
	// for the daemon's measurements: the ns field holds the imafs container
	// ID followed by one NUL, like n-ng; its ascii rendering is the ID.
	// Entries made outside any container (the host) have a zero-length ns
	// field, rendered as an empty string. (Kernels with series v1 named
	// their template ima-ns too; lists from them still parse.)
	TemplateIMANS = "ima-ns"
	// TemplateIMANSReg is the imafs kernel series' template (v2): the same
	// fields, the ns field holding "label:id" of the kernel registration
	// of the measuring task's pid namespace (kernelsrc). A name no earlier
	// kernel RFC used.
	TemplateIMANSReg = "ima-nsreg"
)

// builtinTemplates are the kernel's builtin_templates[] (6.12), the
// series' ima-nsreg and imafs's ima-ns.
var builtinTemplates = []Template{
	{Name: TemplateIMA, Fields: []string{"d", "n"}},
	{Name: TemplateIMANG, Fields: []string{"d-ng", "n-ng"}},
	{Name: TemplateIMASig, Fields: []string{"d-ng", "n-ng", "sig"}},
	{Name: TemplateIMANGv2, Fields: []string{"d-ngv2", "n-ng"}},
	{Name: TemplateIMASigv2, Fields: []string{"d-ngv2", "n-ng", "sig"}},
	{Name: TemplateIMABuf, Fields: []string{"d-ng", "n-ng", "buf"}},
	{Name: TemplateIMAModsig, Fields: []string{"d-ng", "n-ng", "sig", "d-modsig", "modsig"}},
	{Name: TemplateEVMSig, Fields: []string{"d-ng", "n-ng", "evmsig", "xattrnames", "xattrlengths", "xattrvalues", "iuid", "igid", "imode"}},
	{Name: TemplateIMANS, Fields: []string{"d-ng", "n-ng", "ns"}},
	{Name: TemplateIMANSReg, Fields: []string{"d-ng", "n-ng", "ns"}},
}

// maxTemplateNameLen is the kernel's MAX_TEMPLATE_NAME_LEN - 1: the longest
// template name (or custom format) a binary list can carry.
const maxTemplateNameLen = len("d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode")

// Template describes an IMA template: its name as the lists print it and
// its field identifiers in order.
type Template struct {
	Name   string
	Fields []string
}

// compiled is a template ready for encoding and decoding.
type compiled struct {
	name  string
	ids   []string
	kinds []fieldKind
	ima   bool // the legacy "ima" template: no template data length, special hash
}

var templates = func() map[string]*compiled {
	m := make(map[string]*compiled, len(builtinTemplates))
	for _, t := range builtinTemplates {
		c, err := compile(t.Name, t.Fields)
		if err != nil {
			panic(err)
		}
		m[t.Name] = c
	}
	return m
}()

func compile(name string, ids []string) (*compiled, error) {
	c := &compiled{name: name, ids: ids, kinds: make([]fieldKind, len(ids)), ima: name == TemplateIMA}
	for i, id := range ids {
		k, ok := fieldKinds[id]
		if !ok {
			return nil, fmt.Errorf("template %q: unknown field %q", name, id)
		}
		c.kinds[i] = k
	}
	return c, nil
}

// lookup returns the compiled template for a name. Like the kernel, a name
// that is not a builtin template is read as a custom format "f1|f2|..."
// (lists print a custom template by its format).
func lookup(name string) (*compiled, error) {
	if c, ok := templates[name]; ok {
		return c, nil
	}
	if name == "" || len(name) > maxTemplateNameLen {
		return nil, fmt.Errorf("template %q: unknown", name)
	}
	if c, ok := customTemplates.Load(name); ok {
		return c.(*compiled), nil
	}
	ids := strings.Split(name, "|")
	for _, id := range ids {
		if _, ok := fieldKinds[id]; !ok {
			return nil, fmt.Errorf("template %q: unknown (not a builtin template, and %q is not a template field)", name, id)
		}
	}
	c, err := compile(name, ids)
	if err == nil && customCount.Add(1) <= maxCustomTemplates {
		customTemplates.Store(name, c)
	}
	return c, err
}

// customTemplates caches compiled custom formats (at most
// maxCustomTemplates, so untrusted input cannot grow it without bound).
var (
	customTemplates sync.Map
	customCount     atomic.Int32
)

const maxCustomTemplates = 64

// LookupTemplate returns the template called name: one of the kernel's
// builtin templates (ima, ima-ng, ima-sig, ima-ngv2, ima-sigv2, ima-buf,
// ima-modsig, evm-sig), the kernel series' ima-nsreg, imafs's ima-ns, or a
// custom format such as
// "d-ng|n-ng|iuid" made of known fields. The result is a copy.
func LookupTemplate(name string) (*Template, error) {
	c, err := lookup(name)
	if err != nil {
		return nil, fmt.Errorf("lookup template: %w", err)
	}
	return &Template{Name: c.name, Fields: append([]string(nil), c.ids...)}, nil
}

// Templates returns the names of the builtin templates.
func Templates() []string {
	names := make([]string, len(builtinTemplates))
	for i, t := range builtinTemplates {
		names[i] = t.Name
	}
	return names
}
