//go:build race

package packaging

const raceEnabled = true
