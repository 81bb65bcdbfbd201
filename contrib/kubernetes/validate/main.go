// Command validate checks imafs's deployment files against the real API
// types they are read with, offline:
//
//   - every document of contrib/kubernetes/*.yaml is decoded strictly (no
//     unknown or duplicate field, right types) into the Kubernetes API type
//     of its apiVersion/kind (k8s.io/api), then checked for what the API
//     server would refuse or what would break imafs on a node: names,
//     label selectors that match their template, volume mounts without a
//     volume, relative paths, missing ConfigMap keys, a daemon outside the
//     host pid namespace or without privilege;
//   - every OCI hook definition (contrib/hooks.d/*.json, the hooks.d JSON
//     inside the manifests' ConfigMaps) is decoded strictly as the hooks.d
//     1.0.0 format that podman, CRI-O and NRI's hook-injector read, and
//     checked as their hook manager does;
//   - contrib/runc-config-hooks.json's "hooks" is decoded strictly into the
//     OCI runtime-spec Hooks type.
//
// Usage: go run . [REPO_ROOT] (default ../../..). Exit status 1 on any
// problem, each printed as "file: problem".
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

func main() {
	root := "../../.."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	problems, checked, err := checkRepo(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate:", err)
		os.Exit(1)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Printf("validate: %d problem(s) in %d file(s) checked\n", len(problems), len(checked))
		os.Exit(1)
	}
	fmt.Printf("validate: ok: %s\n", strings.Join(checked, " "))
}

// checkRepo validates every deployment file under root/contrib.
func checkRepo(root string) (problems, checked []string, err error) {
	manifests, err := filepath.Glob(filepath.Join(root, "contrib/kubernetes/*.yaml"))
	if err != nil {
		return nil, nil, err
	}
	hooks, err := filepath.Glob(filepath.Join(root, "contrib/hooks.d/*.json"))
	if err != nil {
		return nil, nil, err
	}
	if len(manifests) == 0 {
		return nil, nil, fmt.Errorf("no manifests in %s/contrib/kubernetes", root)
	}
	add := func(file string, ps []string) {
		rel, _ := filepath.Rel(root, file)
		checked = append(checked, rel)
		for _, p := range ps {
			problems = append(problems, rel+": "+p)
		}
	}
	for _, f := range manifests {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		add(f, checkManifest(data))
	}
	for _, f := range hooks {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		add(f, checkHooksD(data))
	}
	if f := filepath.Join(root, "contrib/runc-config-hooks.json"); exists(f) {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		add(f, checkRuncHooks(data))
	}
	return problems, checked, nil
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// object is one decoded manifest document.
type object struct {
	index int
	kind  string
	meta  metav1.ObjectMeta
	obj   any
}

// checkManifest decodes every document of a multi-document YAML file.
func checkManifest(data []byte) []string {
	var ps []string
	var objs []object
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		o, err := decode([]byte(doc))
		if err != nil {
			ps = append(ps, fmt.Sprintf("document %d: %v", i+1, err))
			continue
		}
		o.index = i + 1
		objs = append(objs, o)
	}
	namespaces := map[string]bool{"default": true, "kube-system": true}
	configMaps := map[string]*corev1.ConfigMap{}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Namespace:
			namespaces[v.Name] = true
		case *corev1.ConfigMap:
			configMaps[v.Namespace+"/"+v.Name] = v
		}
	}
	for _, o := range objs {
		at := fmt.Sprintf("document %d (%s %s)", o.index, o.kind, o.meta.Name)
		for _, p := range checkMeta(o, namespaces) {
			ps = append(ps, at+": "+p)
		}
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			for _, p := range checkConfigMap(v) {
				ps = append(ps, at+": "+p)
			}
		case *appsv1.DaemonSet:
			for _, p := range checkDaemonSet(v, configMaps) {
				ps = append(ps, at+": "+p)
			}
		}
	}
	return ps
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode reads apiVersion/kind, then the whole document strictly into the
// API type.
func decode(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, fmt.Errorf("yaml: %w", err)
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Namespace":
		obj = &corev1.Namespace{}
	case "v1/ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1/ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "v1/Service":
		obj = &corev1.Service{}
	case "apps/v1/DaemonSet":
		obj = &appsv1.DaemonSet{}
	default:
		return object{}, fmt.Errorf("apiVersion %q kind %q: not a type this checker knows", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	var meta metav1.ObjectMeta
	switch v := obj.(type) {
	case *corev1.Namespace:
		meta = v.ObjectMeta
	case *corev1.ConfigMap:
		meta = v.ObjectMeta
	case *corev1.ServiceAccount:
		meta = v.ObjectMeta
	case *corev1.Service:
		meta = v.ObjectMeta
	case *appsv1.DaemonSet:
		meta = v.ObjectMeta
	}
	return object{kind: tm.Kind, meta: meta, obj: obj}, nil
}

func checkMeta(o object, namespaces map[string]bool) []string {
	var ps []string
	if o.meta.Name == "" {
		ps = append(ps, "metadata.name is empty")
	}
	for _, msg := range validation.IsDNS1123Subdomain(o.meta.Name) {
		ps = append(ps, "metadata.name: "+msg)
	}
	if o.kind == "Namespace" {
		if o.meta.Namespace != "" {
			ps = append(ps, "a Namespace has no metadata.namespace")
		}
	} else {
		switch {
		case o.meta.Namespace == "":
			ps = append(ps, "metadata.namespace is empty (the object would land in whatever namespace kubectl uses)")
		case !namespaces[o.meta.Namespace]:
			ps = append(ps, fmt.Sprintf("metadata.namespace %q is not created in this file", o.meta.Namespace))
		}
	}
	ps = append(ps, checkLabels("metadata.labels", o.meta.Labels)...)
	return ps
}

func checkLabels(where string, ls map[string]string) []string {
	var ps []string
	for k, v := range ls {
		for _, msg := range validation.IsQualifiedName(k) {
			ps = append(ps, fmt.Sprintf("%s key %q: %s", where, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			ps = append(ps, fmt.Sprintf("%s[%s] %q: %s", where, k, v, msg))
		}
	}
	return ps
}

func checkConfigMap(cm *corev1.ConfigMap) []string {
	var ps []string
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, msg := range validation.IsConfigMapKey(k) {
			ps = append(ps, fmt.Sprintf("data key %q: %s", k, msg))
		}
		if strings.HasSuffix(k, ".json") {
			for _, p := range checkHooksD([]byte(cm.Data[k])) {
				ps = append(ps, fmt.Sprintf("data[%s]: %s", k, p))
			}
		}
	}
	return ps
}

var configRef = regexp.MustCompile(`(/[A-Za-z0-9_./-]+)`)

func checkDaemonSet(ds *appsv1.DaemonSet, configMaps map[string]*corev1.ConfigMap) []string {
	var ps []string
	spec := ds.Spec.Template.Spec
	if ds.Spec.Selector == nil || (len(ds.Spec.Selector.MatchLabels) == 0 && len(ds.Spec.Selector.MatchExpressions) == 0) {
		ps = append(ps, "spec.selector is empty")
	} else if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err != nil {
		ps = append(ps, "spec.selector: "+err.Error())
	} else if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		ps = append(ps, "spec.selector does not match spec.template.metadata.labels (the API server refuses it)")
	}
	ps = append(ps, checkLabels("spec.template.metadata.labels", ds.Spec.Template.Labels)...)
	if !spec.HostPID {
		ps = append(ps, "spec.template.spec.hostPID is not true: imafs resolves FUSE and fanotify pids in the host pid namespace")
	}
	if len(spec.Containers) == 0 {
		ps = append(ps, "no containers")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			ps = append(ps, fmt.Sprintf("volume %q declared twice", v.Name))
		}
		volumes[v.Name] = v
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			ps = append(ps, fmt.Sprintf("volume %q: %s", v.Name, msg))
		}
		if v.HostPath != nil && !filepath.IsAbs(v.HostPath.Path) {
			ps = append(ps, fmt.Sprintf("volume %q: hostPath %q is not absolute", v.Name, v.HostPath.Path))
		}
		if v.ConfigMap != nil {
			key := ds.Namespace + "/" + v.ConfigMap.Name
			if _, ok := configMaps[key]; !ok && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
				ps = append(ps, fmt.Sprintf("volume %q: ConfigMap %s is not in this file", v.Name, key))
			}
		}
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container(nil), spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		where := fmt.Sprintf("container %q", c.Name)
		if names[c.Name] {
			ps = append(ps, where+": name used twice")
		}
		names[c.Name] = true
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			ps = append(ps, where+": "+msg)
		}
		if c.Image == "" {
			ps = append(ps, where+": no image")
		}
		mounts := map[string]string{} // mountPath → volume
		for _, m := range c.VolumeMounts {
			v, ok := volumes[m.Name]
			if !ok {
				ps = append(ps, fmt.Sprintf("%s: volumeMount %q has no volume", where, m.Name))
			}
			if !filepath.IsAbs(m.MountPath) {
				ps = append(ps, fmt.Sprintf("%s: mountPath %q is not absolute", where, m.MountPath))
			}
			if prev, dup := mounts[m.MountPath]; dup {
				ps = append(ps, fmt.Sprintf("%s: %s mounted twice (%s, %s)", where, m.MountPath, prev, m.Name))
			}
			mounts[m.MountPath] = m.Name
			// Files the container reads from a ConfigMap volume must be keys of it.
			if ok && v.ConfigMap != nil {
				cm := configMaps[ds.Namespace+"/"+v.ConfigMap.Name]
				for _, s := range append(append([]string(nil), c.Command...), c.Args...) {
					for _, ref := range configRef.FindAllString(s, -1) {
						if rest, found := strings.CutPrefix(ref, strings.TrimSuffix(m.MountPath, "/")+"/"); found && cm != nil {
							if _, ok := cm.Data[rest]; !ok {
								ps = append(ps, fmt.Sprintf("%s: %s is not a key of ConfigMap %s", where, ref, cm.Name))
							}
						}
					}
				}
			}
		}
	}
	for _, c := range spec.Containers {
		args := strings.Join(append(append([]string(nil), c.Command...), c.Args...), " ")
		if !strings.Contains(args, "serve") {
			continue
		}
		where := fmt.Sprintf("container %q (imafs serve)", c.Name)
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			ps = append(ps, where+": not privileged (it needs CAP_SYS_ADMIN, CAP_SYS_PTRACE and /dev/fuse)")
		}
		socket := "/run/imafs/imafs.sock"
		if m := regexp.MustCompile(`--socket[= ](\S+)`).FindStringSubmatch(args); m != nil {
			socket = m[1]
		}
		if !mountedFromHost(c, volumes, filepath.Dir(socket)) {
			ps = append(ps, fmt.Sprintf("%s: the control socket's directory %s is not a hostPath mount: hooks on the host can't reach it", where, filepath.Dir(socket)))
		}
		state := "/var/lib/imafs"
		if m := regexp.MustCompile(`--state-dir[= ](\S+)`).FindStringSubmatch(args); m != nil {
			state = m[1]
		}
		if !mountedFromHost(c, volumes, state) {
			ps = append(ps, fmt.Sprintf("%s: the state directory %s is not a hostPath mount: the journal would die with the pod", where, state))
		}
		if regexp.MustCompile(`(^| )--fanotify( |$)`).MatchString(args) {
			ps = append(ps, checkKeeper(where, c, spec.InitContainers, state, args)...)
		}
	}
	return ps
}

// checkKeeper checks the fanotify keeper of a daemon run with --fanotify:
// a native sidecar (an init container with restartPolicy: Always, which a
// restart of the daemon's container leaves running) that serves the socket
// the daemon looks for, STATE/fanotify-keeper.sock, on the same state
// volume, and a daemon that waits for it rather than starting a keeper of
// its own in its container.
func checkKeeper(where string, daemon corev1.Container, inits []corev1.Container, state, daemonArgs string) []string {
	var keeper *corev1.Container
	for i, c := range inits {
		if slices.Contains(append(append([]string(nil), c.Command...), c.Args...), "fanotify-keeper") {
			keeper = &inits[i]
		}
	}
	if keeper == nil {
		return []string{where + ": --fanotify without a fanotify-keeper sidecar: a restart of the daemon's container would let the containers' execs run unmeasured"}
	}
	var ps []string
	kwhere := fmt.Sprintf("init container %q (fanotify-keeper)", keeper.Name)
	if keeper.RestartPolicy == nil || *keeper.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		ps = append(ps, kwhere+": no restartPolicy: Always: as a plain init container it never ends, and the pod never starts")
	}
	kargs := strings.Join(append(append([]string(nil), keeper.Command...), keeper.Args...), " ")
	want := filepath.Join(state, "fanotify-keeper.sock")
	if m := regexp.MustCompile(`--socket[= ](\S+)`).FindStringSubmatch(kargs); m == nil || filepath.Clean(m[1]) != want {
		ps = append(ps, fmt.Sprintf("%s: its --socket is not %s, where the daemon looks for it", kwhere, want))
	}
	if volumeAt(*keeper, state) == "" || volumeAt(*keeper, state) != volumeAt(daemon, state) {
		ps = append(ps, fmt.Sprintf("%s: does not mount the daemon's state volume at %s", kwhere, state))
	}
	if !strings.Contains(daemonArgs, "--fanotify-keeper-wait") {
		ps = append(ps, where+": no --fanotify-keeper-wait: the daemon may start a keeper of its own in its container before the sidecar answers")
	}
	return ps
}

// volumeAt is the volume c mounts at path, or "".
func volumeAt(c corev1.Container, path string) string {
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == filepath.Clean(path) {
			return m.Name
		}
	}
	return ""
}

func mountedFromHost(c corev1.Container, volumes map[string]corev1.Volume, path string) bool {
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == filepath.Clean(path) {
			v, ok := volumes[m.Name]
			return ok && v.HostPath != nil
		}
	}
	return false
}

// hooksD is the hooks.d 1.0.0 format (podman's pkg/hooks/1.0.0, which CRI-O
// and NRI's hook-injector use).
type hooksD struct {
	Version string     `json:"version"`
	Hook    rspec.Hook `json:"hook"`
	When    struct {
		Always        *bool             `json:"always,omitempty"`
		Annotations   map[string]string `json:"annotations,omitempty"`
		Commands      []string          `json:"commands,omitempty"`
		HasBindMounts *bool             `json:"hasBindMounts,omitempty"`
	} `json:"when"`
	Stages []string `json:"stages"`
}

var ociStages = map[string]bool{
	"prestart": true, "createRuntime": true, "createContainer": true,
	"startContainer": true, "poststart": true, "poststop": true,
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// checkHooksD validates one hooks.d file as podman's hook manager does
// (version, absolute hook path, at least one condition, compilable
// regular expressions, known stages), plus imafs's own expectations.
func checkHooksD(data []byte) []string {
	var h hooksD
	if err := strictJSON(data, &h); err != nil {
		return []string{"hooks.d JSON: " + err.Error()}
	}
	var ps []string
	if h.Version != "1.0.0" {
		ps = append(ps, fmt.Sprintf("version %q, want \"1.0.0\"", h.Version))
	}
	if !filepath.IsAbs(h.Hook.Path) {
		ps = append(ps, fmt.Sprintf("hook.path %q is not absolute", h.Hook.Path))
	}
	if h.Hook.Timeout != nil && *h.Hook.Timeout <= 0 {
		ps = append(ps, "hook.timeout must be positive")
	}
	if h.When.Always == nil && len(h.When.Annotations) == 0 && len(h.When.Commands) == 0 && h.When.HasBindMounts == nil {
		ps = append(ps, "when has no condition (the hook manager refuses it)")
	}
	for k, v := range h.When.Annotations {
		for _, re := range []string{k, v} {
			if _, err := regexp.Compile(re); err != nil {
				ps = append(ps, fmt.Sprintf("when.annotations: %v", err))
			}
		}
	}
	for _, c := range h.When.Commands {
		if _, err := regexp.Compile(c); err != nil {
			ps = append(ps, fmt.Sprintf("when.commands: %v", err))
		}
	}
	if len(h.Stages) == 0 {
		ps = append(ps, "no stages")
	}
	for _, s := range h.Stages {
		if !ociStages[s] {
			ps = append(ps, fmt.Sprintf("stage %q is not an OCI hook stage", s))
		}
		if s == "poststart" || s == "startContainer" || s == "createContainer" {
			ps = append(ps, fmt.Sprintf("stage %q: imafs attaches at createRuntime (or prestart) and detaches at poststop", s))
		}
	}
	return ps
}

// checkRuncHooks validates the "hooks" object meant for a bundle's config.json.
func checkRuncHooks(data []byte) []string {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return []string{"JSON: " + err.Error()}
	}
	delete(raw, "//")
	var ps []string
	for k := range raw {
		if k != "hooks" {
			ps = append(ps, fmt.Sprintf("unexpected key %q (only \"hooks\" and the \"//\" comment)", k))
		}
	}
	var hooks rspec.Hooks
	if err := strictJSON(raw["hooks"], &hooks); err != nil {
		return append(ps, "hooks: "+err.Error())
	}
	all := map[string][]rspec.Hook{
		"prestart": hooks.Prestart, "createRuntime": hooks.CreateRuntime, "createContainer": hooks.CreateContainer,
		"startContainer": hooks.StartContainer, "poststart": hooks.Poststart, "poststop": hooks.Poststop,
	}
	if len(hooks.CreateRuntime)+len(hooks.Prestart) == 0 {
		ps = append(ps, "no createRuntime or prestart hook: nothing attaches the container")
	}
	for stage, hs := range all {
		for _, h := range hs {
			if !filepath.IsAbs(h.Path) {
				ps = append(ps, fmt.Sprintf("hooks.%s: path %q is not absolute", stage, h.Path))
			}
		}
	}
	sort.Strings(ps)
	return ps
}
