package harness

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Scrape GETs url (a Prometheus /metrics endpoint) and returns the body;
// anything but 200 OK fails the test.
func Scrape(t testing.TB, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// HasLine reports whether text has a line equal to line.
func HasLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}
