package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/config"
	"github.com/fleetprov/fleetprov/internal/plugintest"
	"github.com/fleetprov/fleetprov/plugins/host"
	"github.com/fleetprov/fleetprov/plugins/paramsource"
)

// TestPluginReadsTheSerial builds the example and runs it as fleetprov
// does, with an ordinary file standing in for the EEPROM.
func TestPluginReadsTheSerial(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "eeprom-serial")
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	eeprom := filepath.Join(dir, "eeprom")
	// A programmed serial, a NUL, then erased cells.
	if err := os.WriteFile(eeprom, append([]byte("SN-0042\x00"), 0xff, 0xff, 0xff), 0o644); err != nil {
		t.Fatal(err)
	}
	erased := filepath.Join(dir, "erased")
	if err := os.WriteFile(erased, []byte{0xff, 0xff}, 0o644); err != nil {
		t.Fatal(err)
	}
	h := host.New(host.Options{Logger: slog.New(slog.DiscardHandler), Plugins: []config.Plugin{
		{Name: "eeprom-serial", Path: bin, Env: map[string]string{"EEPROM_PATH": eeprom}, StartTimeout: time.Minute, CallTimeout: time.Minute},
		{Name: "blank", Path: bin, Env: map[string]string{"EEPROM_PATH": erased}, StartTimeout: time.Minute, CallTimeout: time.Minute},
	}})
	defer h.Close()

	src, err := h.ParamSource("eeprom-serial")
	if err != nil {
		t.Fatal(err)
	}
	res, err := src.Params(context.Background(), &paramsource.ParamsRequest{TemplateName: "tmpl", Params: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Params["SerialNumber"]; got != "SN-0042" || len(res.Params) != 1 {
		t.Errorf("Params = %v, want only SerialNumber=SN-0042", res.Params)
	}

	blank, _ := h.ParamSource("blank")
	_, err = blank.Params(context.Background(), &paramsource.ParamsRequest{TemplateName: "tmpl"})
	want := "plugin blank: Params: EEPROM " + erased + " holds no serial number (it reads as erased): program it first"
	if err == nil || err.Error() != want {
		t.Errorf("erased EEPROM: %v\nwant %s", err, want)
	}

	h.Close()
	if pids := plugintest.Processes(bin); len(pids) != 0 {
		t.Errorf("plugin processes %v remain after Close", pids)
	}
}
