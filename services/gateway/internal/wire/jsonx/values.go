package jsonx

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Unquote returns the string a JSON string literal v (quotes included)
// holds. v must have been validated by the scanner.
func Unquote(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", ErrSyntax
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", ErrSyntax
	}
	return s, nil
}

// Int reads a non-negative integer of at most 18 digits, and reports
// whether v was one; floats, strings and larger numbers are not.
func Int(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// IsEmptyArray reports whether v is `[]`, with any inner whitespace.
func IsEmptyArray(v []byte) bool {
	if len(v) < 2 || v[0] != '[' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// IsNull reports whether v is the literal null.
func IsNull(v []byte) bool { return len(v) == 4 && string(v) == "null" }

// Edit replaces body[Start:End] with With; Start == End inserts.
type Edit struct {
	Start, End int
	With       []byte
}

// Apply returns body with edits applied. Edits must not overlap; they may
// come in any order. body itself is not modified.
func Apply(body []byte, edits ...Edit) []byte {
	slices.SortStableFunc(edits, func(a, b Edit) int { return a.Start - b.Start })
	size := len(body)
	for _, e := range edits {
		size += len(e.With) - (e.End - e.Start)
	}
	out := make([]byte, 0, size)
	at := 0
	for _, e := range edits {
		out = append(out, body[at:e.Start]...)
		out = append(out, e.With...)
		at = e.End
	}
	return append(out, body[at:]...)
}

// AppendString appends s to dst as a JSON string literal. Invalid UTF-8
// becomes U+FFFD, as encoding/json does; HTML characters are not escaped.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hex = "0123456789abcdef"

// AppendInt appends n in decimal.
func AppendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

// Kind is the first byte of the JSON value v past any whitespace, or 0
// when v is empty or null: '{', '[', '"', 't', 'f', or a number's first
// byte.
func Kind(v []byte) byte {
	for _, c := range v {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case 'n':
			return 0
		}
		return c
	}
	return 0
}

// IsObject reports whether v is exactly one valid JSON object.
func IsObject(v []byte) bool { return Kind(v) == '{' && Valid(v) }

// Elements calls fn with the index and bytes of each element of the array
// v; an error from fn stops it and is returned.
func Elements(v []byte, fn func(i int, e []byte) error) error {
	i := 0
	return Array(v, func(start, end int) error {
		err := fn(i, v[start:end])
		i++
		return err
	})
}
