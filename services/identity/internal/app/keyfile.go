package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// keyFile is the bootstrap key file: identity.KeyFile on the local file
// system.
type keyFile struct{ path string }

// maxKeyFile bounds what Read accepts; a key is 48 bytes.
const maxKeyFile = 1024

// Read implements identity.KeyFile.
func (f keyFile) Read() (string, bool, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", f.path, err)
	}
	if len(b) > maxKeyFile {
		return "", true, nil // not a key; the caller refuses it
	}
	return strings.TrimSpace(string(b)), true, nil
}

// Create implements identity.KeyFile. The key is written to a temporary
// file (mode 0600) beside the target and linked into place, so the file
// appears whole or not at all, and the link fails rather than replace a
// file that exists.
func (f keyFile) Create(key string) (err error) {
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, ".moat-bootstrap-*")
	if err != nil {
		return fmt.Errorf("create a file in %s: %w", dir, err)
	}
	// After the rename these fail harmlessly (closed, and no file under
	// the temporary name); before it they clean up a failed attempt.
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("restrict %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.WriteString(key + "\n"); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	// The key must survive a crash right after the database commit that
	// follows; the directory entry is part of that.
	if d, err := os.Open(dir); err == nil { //nolint:gosec // the directory of the configured key file
		// Best effort: the file itself is synced; some filesystems refuse
		// a directory fsync, which must not fail the start.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
