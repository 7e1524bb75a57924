package pgtest

import "os"

// lookupEnv is the one environment read of this package; tests are the only
// callers, and the variable is the documented way to point them at a server.
func lookupEnv(k string) string { return os.Getenv(k) }
