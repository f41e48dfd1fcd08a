// Command eeprom-serial is an example fleetprov plugin: a parameter source
// that reads the device's serial number from its EEPROM and offers it as
// the SerialNumber template parameter.
//
// Configure it in the fleet_provisioning configuration:
//
//	plugins:
//	  - name: eeprom-serial
//	    path: /usr/lib/fleetprov/plugins/eeprom-serial
//	    env: {EEPROM_PATH: /sys/bus/i2c/devices/0-0050/eeprom}
//
// See docs/plugins.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/fleetprov/fleetprov/plugins/paramsource"
	"github.com/fleetprov/fleetprov/plugins/sdk"
)

// defaultPath is where a 24C02-style EEPROM on I2C bus 0, address 0x50,
// shows up under Linux's at24 driver.
const defaultPath = "/sys/bus/i2c/devices/0-0050/eeprom"

// maxSerial bounds what is read: an EEPROM is small, and a template
// parameter should be too.
const maxSerial = 64

type eepromSerial struct{ path string }

func (e eepromSerial) Params(_ context.Context, req *paramsource.ParamsRequest) (*paramsource.ParamsResponse, error) {
	f, err := os.Open(e.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("EEPROM %s does not exist: set EEPROM_PATH in the plugin's env", e.path)
		}
		// The at24 driver answers EBUSY and friends while the bus is
		// busy: worth another try.
		return nil, sdk.Transient(fmt.Errorf("open EEPROM %s: %w", e.path, err))
	}
	defer f.Close()
	buf := make([]byte, maxSerial)
	n, err := f.Read(buf)
	if n == 0 && err != nil {
		return nil, sdk.Transient(fmt.Errorf("read EEPROM %s: %w", e.path, err))
	}
	// Erased EEPROM cells read 0xff; the serial ends at the first NUL,
	// 0xff or line break.
	serial := buf[:n]
	if i := bytes.IndexAny(serial, "\x00\xff\n\r"); i >= 0 {
		serial = serial[:i]
	}
	serial = bytes.TrimSpace(serial)
	if len(serial) == 0 {
		return nil, fmt.Errorf("EEPROM %s holds no serial number (it reads as erased): program it first", e.path)
	}
	sdk.Logger().Info("serial number read", "eeprom", e.path, "template", req.TemplateName)
	return &paramsource.ParamsResponse{Params: map[string]string{"SerialNumber": string(serial)}}, nil
}

func main() {
	path := os.Getenv("EEPROM_PATH")
	if path == "" {
		path = defaultPath
	}
	sdk.Serve(sdk.Plugins{ParamSource: eepromSerial{path: path}})
}
