package iotclient

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	paholog "github.com/eclipse/paho.golang/paho/log"
)

// slogAdapter feeds paho's Println/Printf loggers into slog, so that one
// level set on the program's logger governs paho's output too.
type slogAdapter struct {
	l     *slog.Logger
	level slog.Level
	// component tells autopaho's own lines from the inner paho client's.
	component string
}

var _ paholog.Logger = slogAdapter{}

func (a slogAdapter) Println(v ...any) {
	if a.enabled() {
		a.log(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
	}
}

func (a slogAdapter) Printf(format string, v ...any) {
	if a.enabled() {
		a.log(strings.TrimSuffix(fmt.Sprintf(format, v...), "\n"))
	}
}

// enabled is checked first so that paho's chatty debug lines cost nothing
// to format when debug is off.
func (a slogAdapter) enabled() bool { return a.l.Enabled(context.Background(), a.level) }

func (a slogAdapter) log(msg string) {
	a.l.Log(context.Background(), a.level, msg, slog.String("component", a.component))
}
