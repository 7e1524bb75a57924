package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestArray(t *testing.T) {
	t.Parallel()
	b := []byte(` [ 1 , "two" ,{"a":[3]}, [] ] `)
	var got []string
	if err := Array(b, func(start, end int) error { got = append(got, string(b[start:end])); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`1`, `"two"`, `{"a":[3]}`, `[]`}, got); diff != "" {
		t.Errorf("Array elements mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`[1,]`, `{}`, `[1] x`, `[`} {
		if err := Array([]byte(bad), func(int, int) error { return nil }); !errors.Is(err, ErrSyntax) {
			t.Errorf("Array(%s) = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	body := []byte(`{"model":"a","x":1}`)
	got := Apply(body, Edit{Start: 18, End: 18, With: []byte(`,"y":2`)}, Edit{Start: 9, End: 12, With: []byte(`"bb"`)})
	if want := `{"model":"bb","x":1,"y":2}`; string(got) != want {
		t.Errorf("Apply = %s, want %s", got, want)
	}
	if string(body) != `{"model":"a","x":1}` {
		t.Errorf("Apply modified its input: %s", body)
	}
}

// FuzzAppendString checks that AppendString writes a JSON string that
// decodes to the input (with invalid UTF-8 replaced, as encoding/json does).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote \" backslash \\ nl \n tab \t", "\x00\x1f\x7f", "é€😀", "\xff\xfe", "\u2028\u2029", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendString(%q) = %s, not a JSON string: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var wantS string
		_ = json.Unmarshal(want, &wantS) // json.Marshal of a string always decodes
		if got != wantS {
			t.Errorf("AppendString(%q) decodes to %q, want %q", s, got, wantS)
		}
		if !Valid(b) {
			t.Errorf("Valid(%s) = false", b)
		}
	})
}

// FuzzObject checks the scanner against encoding/json: Object accepts
// exactly the objects json.Valid accepts within the depth limit, Valid
// agrees with json.Valid, and nothing panics.
func FuzzObject(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":[1,-2.5e+3,true,false,null,"\u00e9\n"]}`, `{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, `{"a" 1}`,
		`{"a":1,}`, `{"a":tru}`, "{\"a\":\"\x00\"}", `{"a":"\ud800"}`, ` {"a":-0} `, `{"a":[1,]}`, `[1]`, `"s"`, `12`,
		`{"a":"12345678\"9abcdefgh"}`, "{\"a\":\"1234567\x1f9abcdefgh\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := Object(b, func(Member) error { return nil })
		if errors.Is(err, ErrTooDeep) {
			return
		}
		valid := json.Valid(b)
		isObject := len(bytes.TrimLeft(b, " \t\r\n")) > 0 && bytes.TrimLeft(b, " \t\r\n")[0] == '{'
		if got := err == nil; got != (valid && isObject) {
			t.Errorf("Object(%q) accepted = %v, encoding/json = %v (err %v)", b, got, valid && isObject, err)
		}
		if got := Valid(b); got != valid && depth(b) <= MaxDepth {
			t.Errorf("Valid(%q) = %v, encoding/json = %v", b, got, valid)
		}
	})
}

// depth is an upper bound of the nesting of b.
func depth(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '[' || c == '{' {
			n++
		}
	}
	return n
}
