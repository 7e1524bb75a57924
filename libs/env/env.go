// Package env loads a service's configuration struct from environment
// variables named in `env:"..."` tags (github.com/sethvargo/go-envconfig
// syntax), through an injected getenv so that tests pass a fake
// environment instead of mutating the process's.
package env

import (
	"context"
	"errors"
	"reflect"
	"strings"

	"github.com/sethvargo/go-envconfig"
)

// Load fills target, a pointer to a struct with env tags, from getenv. An
// empty value counts as unset, so the tag's default applies. Errors name
// the environment variable, not the Go field, and never quote the value of
// a variable whose name suggests a secret.
func Load(ctx context.Context, getenv func(string) string, target any) error {
	err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target: target,
		Lookuper: envconfig.LookuperFunc(func(k string) (string, bool) {
			v := getenv(k)
			return v, v != ""
		}),
	})
	if err == nil {
		return nil
	}
	return errors.New(rename(err.Error(), target))
}

// rename replaces the leading field path in msg ("Serve: DrainTimeout: ...",
// as go-envconfig reports nested fields) by the variable's name, and hides
// the detail when the variable may hold a secret.
func rename(msg string, target any) string {
	t := reflect.TypeOf(target)
	rest := msg
	for {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return msg
		}
		f, after, ok := fieldPrefix(t, rest)
		if !ok {
			return msg
		}
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name = strings.TrimSpace(name); name != "" {
			if secretName(name) {
				return name + ": invalid value"
			}
			return name + ": " + after
		}
		t, rest = f.Type, after
	}
}

func fieldPrefix(t reflect.Type, msg string) (reflect.StructField, string, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if after, ok := strings.CutPrefix(msg, f.Name+": "); ok {
			return f, after, true
		}
	}
	return reflect.StructField{}, "", false
}

func secretName(name string) bool {
	for _, s := range []string{"SECRET", "PASSWORD", "TOKEN", "KEY", "URL"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}
