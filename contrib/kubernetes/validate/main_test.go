package main

import (
	"os"
	"strings"
	"testing"
)

// TestRepo: the repository's own deployment files pass.
func TestRepo(t *testing.T) {
	problems, checked, err := checkRepo("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) < 2 {
		t.Errorf("checked only %v", checked)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestManifestBreakage: each edit of the real DaemonSet manifest is caught.
func TestManifestBreakage(t *testing.T) {
	orig, err := os.ReadFile("../daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ps := checkManifest(orig); len(ps) != 0 {
		t.Fatalf("the manifest itself: %v", ps)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"unknown field", "hostPID: true", "hostPID: true\n      hostPIDs: true", `unknown field "hostPIDs"`},
		{"wrong type", "maxUnavailable: 1", "maxUnavailable: [1]", "DaemonSet"},
		{"no hostPID", "hostPID: true", "hostPID: false", "hostPID is not true"},
		{"selector mismatch", "      labels:\n        app.kubernetes.io/name: imafs\n    spec:", "      labels:\n        app.kubernetes.io/name: other\n    spec:", "does not match"},
		{"mount without volume", "- name: dev-fuse\n              mountPath: /dev/fuse", "- name: dev-fuze\n              mountPath: /dev/fuse", `volumeMount "dev-fuze" has no volume`},
		{"not privileged", "            # users' tasks), /dev/fuse.\n            privileged: true", "            privileged: false", "not privileged"},
		{"state not on host", "mountPath: /var/lib/imafs\n            - name: config", "mountPath: /var/lib/other\n            - name: config", "state directory /var/lib/imafs is not a hostPath mount"},
		{"keeper not a sidecar", "          restartPolicy: Always\n", "", "no restartPolicy: Always"},
		{"keeper socket elsewhere", "--socket=/var/lib/imafs/fanotify-keeper.sock", "--socket=/run/imafs/keeper.sock", "where the daemon looks for it"},
		{"keeper without the state volume", "mountPath: /var/lib/imafs\n      containers:", "mountPath: /var/lib/keeper\n      containers:", "does not mount the daemon's state volume"},
		{"daemon does not wait for the keeper", "            - --fanotify-keeper-wait=30s\n", "", "no --fanotify-keeper-wait"},
		{"no keeper", "            - fanotify-keeper\n", "            - version\n", "without a fanotify-keeper sidecar"},
		{"missing configmap key", "--container-policy=/config/container-policy", "--container-policy=/config/policy", "/config/policy is not a key"},
		{"bad hook stage", `"stages": ["poststop"]`, `"stages": ["postStop"]`, `stage "postStop" is not an OCI hook stage`},
		{"hook unknown field", `"timeout": 10`, `"timeout": 10, "when": 1`, "hooks.d JSON"},
		{"relative hostPath", "path: /opt/imafs\n", "path: opt/imafs\n", "is not absolute"},
		{"unknown kind", "kind: ConfigMap", "kind: ConfigMapp", "not a type this checker knows"},
		{"namespace not created", "namespace: imafs-system\n  labels:\n    app.kubernetes.io/name: imafs", "namespace: imafs\n  labels:\n    app.kubernetes.io/name: imafs", `metadata.namespace "imafs" is not created`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(orig), tc.old) {
				t.Fatalf("manifest lacks %q: update the test", tc.old)
			}
			broken := strings.Replace(string(orig), tc.old, tc.new, 1)
			ps := checkManifest([]byte(broken))
			if !strings.Contains(strings.Join(ps, "\n"), tc.want) {
				t.Errorf("problems %q, want one containing %q", ps, tc.want)
			}
		})
	}
}

func TestHooksD(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"ok", `{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":["createRuntime"]}`, ""},
		{"no condition", `{"version":"1.0.0","hook":{"path":"/x"},"when":{},"stages":["createRuntime"]}`, "no condition"},
		{"relative path", `{"version":"1.0.0","hook":{"path":"x"},"when":{"always":true},"stages":["createRuntime"]}`, "not absolute"},
		{"old version", `{"version":"0.1.0","hook":{"path":"/x"},"when":{"always":true},"stages":["createRuntime"]}`, "version"},
		{"bad regexp", `{"version":"1.0.0","hook":{"path":"/x"},"when":{"commands":["("]},"stages":["createRuntime"]}`, "when.commands"},
		{"wrong stage for imafs", `{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":["poststart"]}`, "imafs attaches at createRuntime"},
		{"trailing", `{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":["createRuntime"]} {}`, "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(checkHooksD([]byte(tc.json)), "\n")
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("problems %q, want %q", got, tc.want)
			}
		})
	}
}
