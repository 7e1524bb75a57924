// Package e2e holds black-box tests of a running Moat platform. They talk to
// the services only over the network, at the addresses in .moat/platform.env,
// and build only with the e2e tag: run them with `make e2e`, which starts a
// platform, runs them and stops it again.
package e2e
