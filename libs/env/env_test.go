package env_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/env"
)

type nested struct {
	Drain time.Duration `env:"DRAIN, default=1s"`
}

type config struct {
	Serve       nested
	Addr        string        `env:"ADDR, default=:8080"`
	Timeout     time.Duration `env:"TIMEOUT, default=5s"`
	Replicas    int           `env:"REPLICAS"`
	DatabaseURL string        `env:"DATABASE_URL"`
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    config
		wantErr string
	}{
		{"defaults", nil, config{Serve: nested{time.Second}, Addr: ":8080", Timeout: 5 * time.Second}, ""},
		{"empty means unset", map[string]string{"ADDR": ""}, config{Serve: nested{time.Second}, Addr: ":8080", Timeout: 5 * time.Second}, ""},
		{"values", map[string]string{"ADDR": ":1", "TIMEOUT": "1m", "REPLICAS": "3"}, config{Serve: nested{time.Second}, Addr: ":1", Timeout: time.Minute, Replicas: 3}, ""},
		{"nested field error names the variable", map[string]string{"DRAIN": "x"}, config{}, `DRAIN: time: invalid duration "x"`},
		{"error names the variable", map[string]string{"TIMEOUT": "soon"}, config{}, `TIMEOUT: time: invalid duration "soon"`},
		{"secret values are not echoed", map[string]string{"DATABASE_URL": "x", "REPLICAS": "x"}, config{}, "REPLICAS: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got config
			err := env.Load(context.Background(), func(k string) string { return tt.env[k] }, &got)
			if tt.wantErr != "" {
				if err == nil || len(err.Error()) < len(tt.wantErr) || err.Error()[:len(tt.wantErr)] != tt.wantErr {
					t.Fatalf("Load() error = %v, want prefix %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadHidesSecretValues(t *testing.T) {
	t.Parallel()
	var c struct {
		Key []int `env:"SIGNING_KEY"`
	}
	err := env.Load(context.Background(), func(string) string { return "s3cr3t-value" }, &c)
	if err == nil {
		t.Fatal("Load() = nil, want an error")
	}
	if got, want := err.Error(), "SIGNING_KEY: invalid value"; got != want {
		t.Errorf("Load() error = %q, want %q", got, want)
	}
}
