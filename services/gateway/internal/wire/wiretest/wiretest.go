// Package wiretest holds what the codecs' tests share: golden files with
// an -update flag, and a reader that splits a stream at chosen boundaries.
// Only tests import it.
package wiretest

import (
	"flag"
	"io"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Update is the -update flag of every codec test: rewrite the goldens.
var Update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// Golden compares got with the golden file at path, or rewrites the file
// under -update.
func Golden(t testing.TB, path string, got []byte) {
	t.Helper()
	if *Update {
		if err := os.WriteFile(path, got, 0o644); err != nil { //nolint:gosec // a test fixture, path chosen by the test
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path) //nolint:gosec // a test fixture, path chosen by the test
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// SplitReader returns B in pieces whose sizes come from Sizes (each byte
// mod the rest, plus one), then whole once Sizes runs out: a stream cut at
// the boundaries a fuzzer picks.
type SplitReader struct {
	B, Sizes []byte
}

func (r *SplitReader) Read(p []byte) (int, error) {
	if len(r.B) == 0 {
		return 0, io.EOF
	}
	n := len(r.B)
	if len(r.Sizes) > 0 {
		n = int(r.Sizes[0])%len(r.B) + 1
		r.Sizes = r.Sizes[1:]
	}
	n = min(n, len(p))
	copy(p, r.B[:n])
	r.B = r.B[n:]
	return n, nil
}
