package main

import "testing"

func checkCrashDoc(t *testing.T, recorded map[string][]crashPoint) {
	for _, sc := range crashScenarios {
		t.Logf("%s:\n%s", sc.name, formatPoints(recorded[sc.name]))
	}
}
