//go:build race

package e2e

// raceEnabled: the test binary runs under -race, so vmcp is built with it.
const raceEnabled = true
