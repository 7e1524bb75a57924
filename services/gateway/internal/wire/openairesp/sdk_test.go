package openairesp

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/openai/openai-go/v3/packages/respjson"
	"github.com/openai/openai-go/v3/responses"
)

// The official SDK as the client: what the encoders write must decode
// into openai-go's types with every member they mark required present and
// of its type. The SDK's decoder itself accepts nearly anything (a
// missing or mistyped member only leaves its respjson.Field invalid), so
// the check walks the decoded value and reads those fields.

// sdkResponse decodes a whole response object with the SDK.
func sdkResponse(b []byte) (responses.Response, error) {
	var r responses.Response
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("responses.Response: %w", err)
	}
	if err := sdkRequired(reflect.ValueOf(r), "response"); err != nil {
		return r, err
	}
	return r, nil
}

// sdkEvent decodes one stream event's data with the SDK's event union and
// checks the variant its type names.
func sdkEvent(data []byte) (responses.ResponseStreamEventUnion, error) {
	var ev responses.ResponseStreamEventUnion
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("responses.ResponseStreamEventUnion: %w", err)
	}
	return ev, sdkRequired(reflect.ValueOf(ev), ev.Type)
}

// sdkRequired walks v, an SDK value, and reports the required members
// that are missing and the members whose value did not fit their type.
func sdkRequired(v reflect.Value, path string) error {
	var errs []string
	walkSDK(v, path, &errs)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

var fieldType = reflect.TypeFor[respjson.Field]()

func walkSDK(v reflect.Value, path string, errs *[]string) {
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if !v.IsNil() {
			walkSDK(v.Elem(), path, errs)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkSDK(v.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Struct:
		// A union: check the variant its discriminator names.
		if m := v.MethodByName("AsAny"); m.IsValid() && m.Type().NumIn() == 0 && m.Type().NumOut() == 1 {
			variant := m.Call(nil)[0]
			if variant.IsNil() {
				*errs = append(*errs, path+": a variant the SDK does not know")
				return
			}
			walkSDK(variant.Elem(), path, errs)
			return
		}
		meta := v.FieldByName("JSON")
		if !meta.IsValid() || meta.Kind() != reflect.Struct {
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || f.Name == "JSON" || name == "" || name == "-" {
				continue
			}
			mf := meta.FieldByName(f.Name)
			if !mf.IsValid() || mf.Type() != fieldType {
				continue
			}
			field := mf.Interface().(respjson.Field)
			raw := field.Raw()
			switch {
			case raw == respjson.Omitted:
				if strings.Contains(f.Tag.Get("api"), "required") {
					*errs = append(*errs, path+"."+name+": required, missing")
				}
			case raw != respjson.Null && !field.Valid():
				*errs = append(*errs, path+"."+name+": does not fit "+f.Type.String())
			case field.Valid():
				walkSDK(v.Field(i), path+"."+name, errs)
			}
		}
	}
}
