package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/fleetprov/fleetprov/engine"
	"github.com/fleetprov/fleetprov/failure"
)

// registerWithBackend tells the vendor's backend which thing and
// certificate the device got, and journals the id the backend gave it.
type registerWithBackend struct{ url string }

// backendRecord is this step's journaled data, under its own key.
type backendRecord struct {
	DeviceID string `json:"deviceId"`
}

const dataKey = "RegisterWithBackend"

func (s *registerWithBackend) Run(ctx context.Context, r *engine.Run) error {
	var rec backendRecord
	if found, err := r.Data.Get(dataKey, &rec); err != nil {
		return err
	} else if found {
		r.Log.Info("already registered with the backend", "deviceId", rec.DeviceID)
		return nil
	}
	if s.url == "" {
		return failure.Usage("ACME_BACKEND_URL is not set: set it to the backend's /devices URL")
	}
	body, err := json.Marshal(map[string]string{"thingName": r.Data.ThingName, "certificateId": r.Data.CertificateID})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("backend URL %q: %w", s.url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The network may come back: retried with backoff.
		return failure.Transient(fmt.Errorf("backend: %w", err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		return failure.Transient(fmt.Errorf("backend: %s", resp.Status))
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated:
		return fmt.Errorf("backend refused the device: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || rec.DeviceID == "" {
		return errors.Join(errors.New("backend answered without a deviceId"), err)
	}
	r.Log.Info("registered with the backend", "deviceId", rec.DeviceID)
	return r.Data.Put(dataKey, rec)
}
