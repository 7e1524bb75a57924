package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// prompt is the one user message of every request.
const prompt = "Benchmark me, please."

// target is an endpoint and the request sent to it: an OpenAI chat
// completion, or an Anthropic Messages request.
type target struct {
	name   string // gateway | direct
	url    string // the endpoint
	header http.Header
	plain  []byte // the non-streamed body
	stream []byte // the streamed body
}

func (t target) body(stream bool) []byte {
	if stream {
		return t.stream
	}
	return t.plain
}

// openAITarget sends OpenAI chat completions for model to baseURL.
func openAITarget(name, baseURL, key, model string) target {
	return target{name: name, url: baseURL + "/chat/completions",
		header: http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}},
		plain:  []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"` + prompt + `"}]}`),
		stream: []byte(`{"model":"` + model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"` + prompt + `"}]}`)}
}

// anthropicTarget sends the Anthropic Messages request equivalent to
// openAITarget's, with the max_tokens a translating gateway puts in when
// the client names none.
func anthropicTarget(name, baseURL, key, model string, maxTokens int) target {
	head := `{"model":"` + model + `","max_tokens":` + strconv.Itoa(maxTokens)
	msgs := `"messages":[{"role":"user","content":"` + prompt + `"}]}`
	return target{name: name, url: baseURL + "/messages",
		header: http.Header{"X-Api-Key": {key}, "Anthropic-Version": {"2023-06-01"}, "Content-Type": {"application/json"}},
		plain:  []byte(head + "," + msgs),
		stream: []byte(head + `,"stream":true,` + msgs)}
}

// client serves the one-at-a-time requests; the timeout keeps a stuck
// gateway from stalling the run.
var client = &http.Client{Timeout: 30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}

// timing is one request's latency: to the first body byte, and to the end
// of the body.
type timing struct{ first, total time.Duration }

// sequential sends n requests one after another; any status but 200 is an
// error.
func sequential(ctx context.Context, t target, n int, stream bool) ([]timing, error) {
	out := make([]timing, 0, n)
	for range n {
		tm, code, err := once(ctx, t, stream)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("status %d", code)
		}
		out = append(out, tm)
	}
	return out, nil
}

// once sends one request and reads the whole answer.
func once(ctx context.Context, t target, stream bool) (timing, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body(stream)))
	if err != nil {
		return timing{}, 0, err
	}
	req.Header = t.header.Clone()
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return timing{}, 0, err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var tm timing
	if _, err := br.ReadByte(); err != nil && err != io.EOF {
		return timing{}, 0, fmt.Errorf("read the first byte: %w", err)
	}
	tm.first = time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		return timing{}, 0, fmt.Errorf("read the body: %w", err)
	}
	tm.total = time.Since(start)
	return tm, resp.StatusCode, nil
}
