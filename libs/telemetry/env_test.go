package telemetry

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadSettings(t *testing.T) {
	t.Parallel()
	// defaults is what an empty environment gives for service "billing";
	// each case states only how it differs.
	defaults := func() settings {
		return settings{
			resource:      map[string]string{"service.name": "billing"},
			sampler:       "parentbased_always_on",
			metricEvery:   time.Minute,
			metricTimeout: 30 * time.Second,
		}
	}
	httpExport := func(endpoint string) export {
		return export{protocol: protoHTTP, endpoint: endpoint, timeout: 10 * time.Second}
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    func(*settings)
		wantErr bool
	}{
		{name: "empty environment has no exporter", want: func(*settings) {}},
		{
			name: "service name and resource attributes",
			env: map[string]string{
				"OTEL_SERVICE_NAME":        "billing-canary",
				"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod, team=a%20b,service.name=ignored",
			},
			want: func(s *settings) {
				s.resource = map[string]string{
					"service.name": "billing-canary", "deployment.environment.name": "prod", "team": "a b",
				}
			},
		},
		{
			name: "generic endpoint gets signal paths over http",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
			want: func(s *settings) {
				s.traces = httpExport("http://collector:4318/v1/traces")
				s.metrics = httpExport("http://collector:4318/v1/metrics")
			},
		},
		{
			name: "per-signal endpoint is used as given",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/custom",
			},
			want: func(s *settings) {
				s.traces = httpExport("https://traces.example/custom")
				s.metrics = httpExport("http://collector:4318/v1/metrics")
			},
		},
		{
			name: "only traces endpoint",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
			want: func(s *settings) { s.traces = httpExport("http://collector:4318/v1/traces") },
		},
		{
			name: "grpc protocol keeps the endpoint",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			},
			want: func(s *settings) {
				s.traces = export{protocol: protoGRPC, endpoint: "http://collector:4317", timeout: 10 * time.Second}
				s.metrics = s.traces
			},
		},
		{
			name: "per-signal protocol, headers, timeout and compression",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":            "http://collector:4318",
				"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL":    "grpc",
				"OTEL_EXPORTER_OTLP_HEADERS":             "authorization=Bearer%20abc",
				"OTEL_EXPORTER_OTLP_TRACES_HEADERS":      "x-tenant=t1",
				"OTEL_EXPORTER_OTLP_TIMEOUT":             "2500",
				"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION":  "gzip",
				"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none",
				"OTEL_METRIC_EXPORT_INTERVAL":            "5000",
			},
			want: func(s *settings) {
				s.traces = export{
					protocol: protoHTTP, endpoint: "http://collector:4318/v1/traces",
					headers: map[string]string{"x-tenant": "t1"}, timeout: 2500 * time.Millisecond, gzip: true,
				}
				s.metrics = export{
					protocol: protoGRPC, endpoint: "http://collector:4318",
					headers: map[string]string{"authorization": "Bearer abc"}, timeout: 2500 * time.Millisecond,
				}
				s.metricEvery = 5 * time.Second
			},
		},
		{
			name: "exporters turned off",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
				"OTEL_TRACES_EXPORTER":        "none",
				"OTEL_METRICS_EXPORTER":       "prometheus",
			},
			want: func(*settings) {},
		},
		{
			name: "otlp and prometheus metrics",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics",
				"OTEL_METRICS_EXPORTER":               "otlp, prometheus",
			},
			want: func(s *settings) { s.metrics = httpExport("http://collector:4318/v1/metrics") },
		},
		{
			name: "sdk disabled",
			env:  map[string]string{"OTEL_SDK_DISABLED": "TRUE"},
			want: func(s *settings) { s.disabled = true },
		},
		{
			name: "sampler with ratio",
			env:  map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: func(s *settings) { s.sampler, s.samplerArg = "parentbased_traceidratio", 0.25 },
		},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: true},
		{name: "bad sampler ratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: true},
		{name: "endpoint without scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, wantErr: true},
		{
			name:    "http/json is not supported",
			env:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			wantErr: true,
		},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: true},
		{name: "prometheus is not a trace exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "prometheus"}, wantErr: true},
		{name: "malformed resource attributes", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, wantErr: true},
		{
			name:    "malformed headers",
			env:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_HEADERS": "a=%zz"},
			wantErr: true,
		},
		{
			name:    "zero timeout",
			env:     map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "0"},
			wantErr: true,
		},
		{name: "bad metric interval", env: map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "1m"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := loadSettings("billing", func(k string) string { return tt.env[k] })
			if tt.wantErr {
				if err == nil {
					t.Fatalf("loadSettings(%v) = %+v, want error", tt.env, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadSettings(%v): %v", tt.env, err)
			}
			want := defaults()
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(settings{}, export{})); diff != "" {
				t.Errorf("settings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadSettingsReportsEveryProblem(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"OTEL_TRACES_SAMPLER":         "sometimes",
		"OTEL_METRIC_EXPORT_INTERVAL": "soon",
	}
	_, err := loadSettings("", func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("loadSettings() = nil error, want one naming every bad variable")
	}
	for _, want := range []string{"service name", "OTEL_TRACES_SAMPLER", "OTEL_METRIC_EXPORT_INTERVAL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("loadSettings() error %q does not mention %s", err, want)
		}
	}
}

func TestParseKeyValuesDoesNotEchoValues(t *testing.T) {
	t.Parallel()
	// Header values are credentials; an error must not put them in logs.
	_, err := parseKeyValues("authorization=Bearer%zzsecret")
	if err == nil {
		t.Fatal("parseKeyValues() = nil error, want error")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("parseKeyValues() error %q leaks the value", err)
	}
}
