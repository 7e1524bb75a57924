package credential

// This file holds the AWS credential of a Bedrock provider: SigV4 signing
// with keys from the default AWS chain (IRSA web identity, environment,
// shared profiles, SSO, ECS and EC2 roles) or static keys, or a Bedrock
// API key sent as a bearer token. Keys are fetched at construction and
// refreshed by Run in the background before they expire, so that signing
// on the request path is pure computation. No error or log line carries
// a secret: messages name what is wrong, never the value.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/go-json-experiment/json"
)

// BedrockService is the SigV4 signing name of Bedrock's runtime API.
const BedrockService = "bedrock"

// ErrAWSExpired reports that the AWS keys expired before the background
// refresh could replace them (see (*AWS).Run and (*AWS).LastError).
var ErrAWSExpired = errors.New("aws credentials expired: the background refresh has not replaced them")

// The refresh schedule of temporary AWS keys: they are replaced five
// minutes before they expire (far more than one request's signing
// lead); a failed refresh is retried after 5 s, doubling to a minute;
// and two refreshes are at least 30 s apart, so that a provider handing
// out keys already near their expiry is not called in a loop.
const (
	awsRefreshBefore = 5 * time.Minute
	awsRetryMin      = 5 * time.Second
	awsRetryMax      = time.Minute
	awsRefreshFloor  = 30 * time.Second
)

// AWS authenticates requests to Bedrock for one provider: SigV4 for the
// bedrock service in one region, or a Bedrock API key. It is safe for
// concurrent use: Sign may run on any number of requests while Run
// refreshes the keys.
type AWS struct {
	region string
	kind   string                // what the keys are, for String
	apiKey string                // Bedrock API key mode when set
	cache  *aws.CredentialsCache // nil for an API key
	signer *v4.Signer
	sched  awsSchedule

	mu      sync.RWMutex
	creds   aws.Credentials
	until   time.Time // when creds stop working, zero when never
	lastErr error
}

// awsSchedule holds the refresh timings; tests shorten them.
type awsSchedule struct {
	before, retryMin, retryMax, floor time.Duration
}

var awsDefaultSchedule = awsSchedule{before: awsRefreshBefore, retryMin: awsRetryMin, retryMax: awsRetryMax, floor: awsRefreshFloor}

// awsStaticKeys is the JSON form of static AWS keys.
type awsStaticKeys struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
}

// NewAWS returns the AWS credential of a Bedrock provider in region.
// credentialJSON is one of:
//   - empty: the default AWS credential chain (config.LoadDefaultConfig:
//     environment, IRSA web identity, shared profiles, SSO, container and
//     instance roles), whose HTTP calls (STS, IMDS) go through client (nil:
//     the SDK's own; a CA bundle from AWS_CA_BUNDLE or a profile can be
//     added only to the SDK's own, so with a client it is an error);
//     region may then be empty to take AWS_REGION or the profile's;
//   - a JSON object {"accessKeyId", "secretAccessKey", "sessionToken"?}:
//     static keys, which never expire;
//   - anything else: a Bedrock API key, sent as `Authorization: Bearer
//     <key>` without signing.
//
// NewAWS retrieves the keys once, so a provider whose keys cannot be had
// fails here, at configuration time, rather than on its first request.
func NewAWS(ctx context.Context, credentialJSON []byte, region string, client *http.Client) (*AWS, error) {
	cred := bytes.TrimSpace(credentialJSON)
	switch {
	case len(cred) == 0:
		opts := []func(*config.LoadOptions) error{
			config.WithCredentialsCacheOptions(func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = awsRefreshBefore }),
		}
		if region != "" {
			opts = append(opts, config.WithRegion(region))
		}
		if client != nil {
			opts = append(opts, config.WithHTTPClient(client))
		}
		cfg, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			if client != nil && strings.Contains(err.Error(), "RootCAs") {
				// The SDK adds a CA bundle only to its own client type.
				return nil, fmt.Errorf("aws credential: AWS_CA_BUNDLE (or a profile's ca_bundle) cannot be added to the gateway's HTTP client; trust those roots in its transport and unset it: %w", err)
			}
			return nil, fmt.Errorf("aws credential: load the default configuration: %w", err)
		}
		if cfg.Credentials == nil {
			return nil, errors.New("aws credential: the default chain found no credentials")
		}
		return newAWS(ctx, "default credential chain", cfg.Credentials, cfg.Region, awsDefaultSchedule)
	case cred[0] == '{':
		var k awsStaticKeys
		if err := json.Unmarshal(cred, &k, json.RejectUnknownMembers(true)); err != nil {
			// The decoder's message may quote the input: say only what
			// shape is expected.
			return nil, errors.New(`aws credential: must be a JSON object {"accessKeyId", "secretAccessKey", "sessionToken"?} with string values`)
		}
		if k.AccessKeyID == "" || k.SecretAccessKey == "" {
			return nil, errors.New("aws credential: accessKeyId and secretAccessKey are required")
		}
		return newAWS(ctx, "static keys", credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, k.SessionToken), region, awsDefaultSchedule)
	default:
		for _, c := range cred {
			if c <= ' ' || c >= 0x7f {
				return nil, errors.New("aws credential: a Bedrock API key must be printable ASCII without spaces")
			}
		}
		return &AWS{region: region, kind: "bedrock api key", apiKey: string(cred)}, nil
	}
}

// newAWS wraps provider in a credentials cache (unless it is one already,
// as the default chain's is: a second cache would hide the first's
// expiry) and retrieves the keys once.
func newAWS(ctx context.Context, kind string, provider aws.CredentialsProvider, region string, sched awsSchedule) (*AWS, error) {
	if region == "" {
		return nil, errors.New("aws credential: no region (set the provider's region, or AWS_REGION)")
	}
	cache, ok := provider.(*aws.CredentialsCache)
	if !ok {
		cache = aws.NewCredentialsCache(provider, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = sched.before })
	}
	a := &AWS{region: region, kind: kind, cache: cache, signer: v4.NewSigner(), sched: sched}
	c, err := cache.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws credential: retrieve: %w", err)
	}
	a.store(c)
	return a, nil
}

// store keeps fresh keys. The cache returns them with their expiry moved
// forward by its window (when it should refresh); until is when they
// really stop working.
func (a *AWS) store(c aws.Credentials) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.creds, a.until, a.lastErr = c, time.Time{}, nil
	if c.CanExpire {
		a.until = c.Expires.Add(a.sched.before)
	}
}

// String names the credential's kind and region for logs, never its
// keys: fmt's %v and %+v of an *AWS would otherwise print them.
func (a *AWS) String() string {
	return "aws " + a.kind + " (" + a.region + ")"
}

// GoString is String, for %#v.
func (a *AWS) GoString() string { return a.String() }

// LogValue is String, for log/slog.
func (a *AWS) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Region is the region the credential signs for.
func (a *AWS) Region() string { return a.region }

// LastError is the error of the last background refresh, nil when it
// succeeded: a health check reads it. It never holds a secret.
func (a *AWS) LastError() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.lastErr
}

// Sign authenticates req, whose body is body, at time now: a Bedrock API
// key is set as a bearer token; otherwise the request is signed with
// SigV4 for the bedrock service (Authorization, X-Amz-Date and, for
// temporary keys, X-Amz-Security-Token) with the keys already held, so
// Sign does no I/O. Sign after every other header is set: later changes
// to the signed headers (host, content-length, x-amz-*) void the
// signature. The URL's path must be escaped as Bedrock's SDK escapes it
// (the model id as one segment, url.PathEscape). Keys past their expiry
// are ErrAWSExpired.
func (a *AWS) Sign(req *http.Request, body []byte, now time.Time) error {
	if a.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+a.apiKey)
		return nil
	}
	a.mu.RLock()
	c, until := a.creds, a.until
	a.mu.RUnlock()
	if !until.IsZero() && !now.Before(until) {
		return ErrAWSExpired
	}
	sum := sha256.Sum256(body)
	// The context only reaches the signer's logger, which is off.
	if err := a.signer.SignHTTP(context.Background(), c, req, hex.EncodeToString(sum[:]), BedrockService, a.region, now); err != nil {
		return fmt.Errorf("aws credential: sign: %w", err)
	}
	return nil
}

// Run refreshes temporary keys before they expire until ctx is done, and
// then returns nil. A failed refresh is retried with backoff (the keys
// held stay in use until they expire) and reported by LastError. Static
// keys and API keys need no refresh: Run then only waits for ctx.
func (a *AWS) Run(ctx context.Context) error {
	if a.cache == nil {
		<-ctx.Done()
		return nil
	}
	retry := a.sched.retryMin
	for {
		a.mu.RLock()
		c := a.creds
		failed := a.lastErr != nil
		a.mu.RUnlock()
		if !c.CanExpire && !failed {
			<-ctx.Done()
			return nil
		}
		wait := time.Until(c.Expires)
		if failed {
			wait, retry = retry, min(2*retry, a.sched.retryMax)
		} else {
			wait = max(wait, a.sched.floor)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		nc, err := a.cache.Retrieve(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			a.mu.Lock()
			a.lastErr = fmt.Errorf("aws credential: refresh: %w", err)
			a.mu.Unlock()
		default:
			retry = a.sched.retryMin
			a.store(nc)
		}
	}
}
