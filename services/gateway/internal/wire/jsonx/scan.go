// Package jsonx is the gateway's targeted JSON reader and writer. Request
// bodies are mostly long strings (prompts) that the gateway only needs to
// check and pass on; decoding them into Go values would allocate in
// proportion to the body. The scanner validates a whole document in one
// pass without allocating and reports where the members of an object are,
// so the few fields a gate reads or rewrites are sliced out of the original
// bytes, and span edits splice new values in. Every function is pure: no
// I/O, no state.
package jsonx

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// MaxDepth bounds nesting, so a hostile body cannot exhaust the stack.
const MaxDepth = 256

// Scan errors.
var (
	// ErrSyntax reports a document that is not valid JSON of the expected
	// kind.
	ErrSyntax = errors.New("malformed JSON")
	// ErrTooDeep reports nesting beyond MaxDepth.
	ErrTooDeep = errors.New("JSON nested too deeply")
)

// Member is one member of an object: its raw key (between the quotes,
// escapes intact) and the span of its value in the scanned bytes.
type Member struct {
	Key []byte
	// Escaped says the key holds a backslash escape.
	Escaped    bool
	Start, End int
}

// Is reports whether the member's key equals name. Escaped keys (a client
// writing "mod\u0065l") are unescaped first, so they cannot slip past the
// gateway to a provider that reads them.
func (m Member) Is(name string) bool {
	if !m.Escaped {
		return string(m.Key) == name
	}
	var s string
	quoted := make([]byte, 0, len(m.Key)+2)
	quoted = append(append(append(quoted, '"'), m.Key...), '"')
	return json.Unmarshal(quoted, &s) == nil && s == name
}

type scanner struct {
	b     []byte
	i     int
	depth int
}

// Object validates b as exactly one JSON object (with surrounding
// whitespace) and calls fn for each top-level member, in order; an error
// from fn stops the scan and is returned. It returns the index of the
// object's closing brace.
func Object(b []byte, fn func(Member) error) (closing int, err error) {
	s := scanner{b: b}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return 0, ErrSyntax
	}
	if err := s.object(fn); err != nil {
		return 0, err
	}
	closing = s.i - 1
	s.ws()
	if s.i != len(b) {
		return 0, ErrSyntax
	}
	return closing, nil
}

// Array validates b as exactly one JSON array (with surrounding
// whitespace) and calls fn with the span of each element, in order; an
// error from fn stops the scan and is returned.
func Array(b []byte, fn func(start, end int) error) error {
	s := scanner{b: b}
	s.ws()
	if s.i >= len(b) || b[s.i] != '[' {
		return ErrSyntax
	}
	if err := s.array(fn); err != nil {
		return err
	}
	s.ws()
	if s.i != len(b) {
		return ErrSyntax
	}
	return nil
}

// Valid reports whether b is exactly one JSON value within MaxDepth.
func Valid(b []byte) bool {
	s := scanner{b: b}
	if s.value() != nil {
		return false
	}
	s.ws()
	return s.i == len(b)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) value() error {
	s.ws()
	if s.i >= len(s.b) {
		return ErrSyntax
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(nil)
	case c == '[':
		return s.array(nil)
	case c == '"':
		_, err := s.str()
		return err
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.num()
	}
	return ErrSyntax
}

// object scans the object at s.i, calling fn (if not nil) for each member.
func (s *scanner) object(fn func(Member) error) error {
	if s.depth++; s.depth > MaxDepth {
		return ErrTooDeep
	}
	s.i++ // {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return ErrSyntax
		}
		ks := s.i + 1
		escaped, err := s.str()
		if err != nil {
			return err
		}
		key := s.b[ks : s.i-1]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return ErrSyntax
		}
		s.i++
		s.ws()
		vs := s.i
		if err := s.value(); err != nil {
			return err
		}
		if fn != nil {
			if err := fn(Member{Key: key, Escaped: escaped, Start: vs, End: s.i}); err != nil {
				return err
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return ErrSyntax
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return ErrSyntax
		}
	}
}

// array scans the array at s.i, calling fn (if not nil) with the span of
// each element.
func (s *scanner) array(fn func(start, end int) error) error {
	if s.depth++; s.depth > MaxDepth {
		return ErrTooDeep
	}
	s.i++ // [
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		s.ws()
		start := s.i
		if err := s.value(); err != nil {
			return err
		}
		if fn != nil {
			if err := fn(start, s.i); err != nil {
				return err
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return ErrSyntax
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return ErrSyntax
		}
	}
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain marks the bytes a string holds as they are: not a quote, a
// backslash or a control character. A table lookup keeps the loop over
// long prompts tight.
var plain = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()

// str scans the string at s.i and reports whether it holds an escape.
func (s *scanner) str() (escaped bool, err error) {
	b := s.b
	i := s.i + 1 // past the opening quote
	for {
		// Eight bytes at a time while none is special (SWAR: a byte of
		// x^pattern is zero where x matches; (v-0x01..)&^v&0x80.. is
		// non-zero exactly when some byte of v is zero, or below 0x20
		// for the control test). Then byte by byte up to the special one.
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			q, bs := x^(ones*'"'), x^(ones*'\\')
			if ((q-ones)&^q|(bs-ones)&^bs|(x-ones*0x20)&^x)&highs != 0 {
				break
			}
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return false, ErrSyntax
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return false, ErrSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false, ErrSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return false, ErrSyntax
					}
				}
				i += 6
			default:
				return false, ErrSyntax
			}
		default: // a control character
			return false, ErrSyntax
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *scanner) lit(want string) error {
	if len(s.b)-s.i < len(want) || string(s.b[s.i:s.i+len(want)]) != want {
		return ErrSyntax
	}
	s.i += len(want)
	return nil
}

// num scans a number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (s *scanner) num() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return ErrSyntax
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if !s.digits() {
		return ErrSyntax
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return ErrSyntax
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return ErrSyntax
		}
	}
	return nil
}

// digits scans one or more digits and reports whether there was one.
func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}
