package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Protocols an OTLP exporter can speak. The Go SDK has no http/json exporter,
// so that value of OTEL_EXPORTER_OTLP_PROTOCOL is rejected rather than
// silently sent as protobuf.
const (
	protoHTTP = "http/protobuf"
	protoGRPC = "grpc"
)

// settings is the OTEL_* environment resolved into what Start builds, kept
// apart from Start so the parsing can be table-tested without exporters.
type settings struct {
	disabled      bool
	resource      map[string]string // includes service.name
	sampler       string
	samplerArg    float64
	traces        export
	metrics       export
	metricEvery   time.Duration
	metricTimeout time.Duration
}

// export configures one signal's OTLP exporter. The zero value (empty
// protocol) means the signal has no exporter.
type export struct {
	protocol string
	endpoint string // full URL; for HTTP it includes the signal path
	headers  map[string]string
	timeout  time.Duration
	gzip     bool
}

// loadSettings reads the variables of the OpenTelemetry SDK environment
// specification that Start honours. It reports every problem at once so a
// misconfigured deployment is fixed in one round.
func loadSettings(service string, getenv func(string) string) (settings, error) {
	var errs []error
	s := settings{
		disabled: strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true"),
	}

	res, err := parseKeyValues(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		errs = append(errs, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err))
	}
	if res == nil {
		res = map[string]string{}
	}
	// The service name is a fixed per-service contract (it names the
	// stream, database and chart too), so only OTEL_SERVICE_NAME may
	// override it, not a stray service.name in the resource attributes.
	name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME"))
	if name == "" {
		name = service
	}
	if name == "" {
		errs = append(errs, errors.New("service name is empty and OTEL_SERVICE_NAME is not set"))
	}
	res["service.name"] = name
	s.resource = res

	s.sampler, s.samplerArg, err = parseSampler(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		errs = append(errs, err)
	}

	s.traces, err = loadExport(getenv, "TRACES", "/v1/traces", false)
	if err != nil {
		errs = append(errs, err)
	}
	s.metrics, err = loadExport(getenv, "METRICS", "/v1/metrics", true)
	if err != nil {
		errs = append(errs, err)
	}
	s.metricEvery, err = millis(getenv, "OTEL_METRIC_EXPORT_INTERVAL", 60*time.Second)
	if err != nil {
		errs = append(errs, err)
	}
	s.metricTimeout, err = millis(getenv, "OTEL_METRIC_EXPORT_TIMEOUT", 30*time.Second)
	if err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// loadExport resolves the exporter of one signal ("TRACES" or "METRICS").
// Without an endpoint there is no exporter at all, instead of the SDK's
// default of localhost: a service run without a collector must not spend
// its time retrying a connection nobody listens on.
func loadExport(getenv func(string) string, signal, path string, pullable bool) (export, error) {
	selector := "OTEL_" + signal + "_EXPORTER"
	names := getenv(selector)
	otlp, none := strings.TrimSpace(names) == "", false
	for _, name := range strings.Split(names, ",") {
		switch name = strings.TrimSpace(name); name {
		case "":
		case "otlp":
			otlp = true
		case "none":
			none = true
		case "prometheus":
			// Prometheus is always served, so naming it alone turns OTLP off.
			if !pullable {
				return export{}, fmt.Errorf("%s: unsupported exporter %q", selector, name)
			}
		default:
			return export{}, fmt.Errorf("%s: unsupported exporter %q", selector, name)
		}
	}
	otlp = otlp && !none
	if !otlp {
		return export{}, nil
	}

	perSignal := "OTEL_EXPORTER_OTLP_" + signal + "_"
	lookup := func(suffix string) (string, string) {
		if v := strings.TrimSpace(getenv(perSignal + suffix)); v != "" {
			return perSignal + suffix, v
		}
		return "OTEL_EXPORTER_OTLP_" + suffix, strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + suffix))
	}

	var errs []error
	e := export{protocol: protoHTTP}
	if key, v := lookup("PROTOCOL"); v != "" {
		switch v {
		case protoHTTP, protoGRPC:
			e.protocol = v
		default:
			errs = append(errs, fmt.Errorf("%s: unsupported protocol %q, want %s or %s", key, v, protoHTTP, protoGRPC))
		}
	}

	// Only the generic endpoint gets the signal path appended; a
	// per-signal endpoint is used as given (OTel specification).
	key, endpoint := perSignal+"ENDPOINT", strings.TrimSpace(getenv(perSignal+"ENDPOINT"))
	if endpoint == "" {
		key, endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
		if endpoint != "" && e.protocol == protoHTTP {
			endpoint = strings.TrimRight(endpoint, "/") + path
		}
	}
	if endpoint == "" {
		return export{}, errors.Join(errs...)
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not echoed: a URL may carry user:password.
		errs = append(errs, fmt.Errorf("%s: want an http or https URL with a host", key))
	}
	e.endpoint = endpoint

	key, v := lookup("HEADERS")
	h, err := parseKeyValues(v)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", key, err))
	}
	e.headers = h

	timeoutKey, _ := lookup("TIMEOUT")
	e.timeout, err = millis(getenv, timeoutKey, 10*time.Second)
	if err != nil {
		errs = append(errs, err)
	}

	switch key, v := lookup("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		e.gzip = true
	default:
		errs = append(errs, fmt.Errorf("%s: unsupported compression %q, want gzip or none", key, v))
	}
	return e, errors.Join(errs...)
}

// parseSampler validates OTEL_TRACES_SAMPLER and its argument. The default,
// parentbased_always_on, keeps a caller's sampling decision and samples new
// traces, which is what makes every log line carry a trace id.
func parseSampler(name, arg string) (string, float64, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		name = "parentbased_always_on"
	}
	switch name {
	case "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return name, 0, nil
	case "traceidratio", "parentbased_traceidratio":
		arg = strings.TrimSpace(arg)
		if arg == "" {
			return name, 1, nil
		}
		ratio, err := strconv.ParseFloat(arg, 64)
		if err != nil || ratio < 0 || ratio > 1 {
			return "", 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: want a ratio between 0 and 1, got %q", arg)
		}
		return name, ratio, nil
	default:
		return "", 0, fmt.Errorf("OTEL_TRACES_SAMPLER: unsupported sampler %q", name)
	}
}

// parseKeyValues parses the key1=value1,key2=value2 lists of
// OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS, whose values are
// percent-encoded. It returns nil for an empty list.
func parseKeyValues(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	kv := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			// The pair is not echoed: header values are often credentials.
			return nil, errors.New("want comma-separated key=value pairs")
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %q is not percent-encoded correctly", k)
		}
		kv[k] = val
	}
	return kv, nil
}

// millis reads a duration given in milliseconds, as all OTEL_* durations are.
func millis(getenv func(string) string, key string, def time.Duration) (time.Duration, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: want a positive number of milliseconds, got %q", key, v)
	}
	return time.Duration(n) * time.Millisecond, nil
}
