package measurelog

import (
	"os"
	"path/filepath"
	"runtime"
)

func readFileTB(dir, file string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", "kernel-6.12", dir, file))
}

// runtimeMem samples the cumulative bytes allocated.
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.total = ms.TotalAlloc
}
