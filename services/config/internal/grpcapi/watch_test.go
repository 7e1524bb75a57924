package grpcapi_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

// watcher receives a WatchConfig stream in the background.
type watcher struct {
	cancel context.CancelFunc
	msgs   chan *configv1.WatchConfigResponse
	errs   chan error
}

func (h *harness) watch(t *testing.T) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(h.internal)
	stream, err := h.client.WatchConfig(ctx, &configv1.WatchConfigRequest{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &watcher{cancel: cancel, msgs: make(chan *configv1.WatchConfigResponse, 100), errs: make(chan error, 1)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				w.errs <- err
				return
			}
			w.msgs <- m
		}
	}()
	t.Cleanup(cancel)
	return w
}

// next returns the next message, failing after within.
func (w *watcher) next(t *testing.T, within time.Duration, what string) *configv1.WatchConfigResponse {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.errs:
		t.Fatalf("%s: stream ended: %v", what, err)
	case <-time.After(within):
		t.Fatalf("%s: nothing within %v", what, within)
	}
	return nil
}

// describe names what a watch message carries.
func describe(m *configv1.WatchConfigResponse) string {
	switch e := m.GetEvent().(type) {
	case *configv1.WatchConfigResponse_DeleteName:
		return "delete " + e.DeleteName
	case *configv1.WatchConfigResponse_Upsert:
		return "upsert " + resourceName(e.Upsert)
	case *configv1.WatchConfigResponse_Snapshot:
		s := "snapshot"
		for _, r := range e.Snapshot.GetResources() {
			s += " " + resourceName(r)
		}
		return s
	}
	return "?"
}

func resourceName(r *configv1.ConfigResource) string {
	switch x := r.GetResource().(type) {
	case *configv1.ConfigResource_Organization:
		return x.Organization.GetName()
	case *configv1.ConfigResource_Project:
		return x.Project.GetName()
	case *configv1.ConfigResource_Provider:
		return x.Provider.GetProvider().GetName()
	case *configv1.ConfigResource_Route:
		return x.Route.GetName()
	}
	return "?"
}

// WatchConfig sends a snapshot (parents first), then each change within a
// second (the re-check interval is longer: notifications drive it), and a
// reconnecting watcher gets a fresh snapshot at the current version.
func TestWatchConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{Recheck: time.Minute})
	h.seed(t, "sk-watch")
	c, ctx := h.client, h.admin

	w := h.watch(t)
	snap := w.next(t, 5*time.Second, "snapshot")
	want := "snapshot orgs/acme orgs/acme/projects/web orgs/acme/providers/openai orgs/acme/projects/web/routes/gpt"
	if got := describe(snap); got != want {
		t.Errorf("first message = %s, want %s", got, want)
	}
	if snap.GetVersion() <= 0 {
		t.Errorf("snapshot version = %d, want > 0", snap.GetVersion())
	}
	last := snap.GetVersion()

	changes := []struct {
		name string
		do   func() error
		want string
	}{
		{"create a route", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "fast", Route: &configv1.Route{
				Model: "fast", Provider: "orgs/acme/providers/openai", UpstreamModel: "gpt-4o-mini"}})
			return err
		}, "upsert orgs/acme/projects/web/routes/fast"},
		{"rotate the credential", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
				Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Credential: "sk-rotated"}, UpdateMask: mask("credential")})
			return err
		}, "upsert orgs/acme/providers/openai"},
		{"delete a route", func() error {
			_, err := c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: "orgs/acme/projects/web/routes/gpt"})
			return err
		}, "delete orgs/acme/projects/web/routes/gpt"},
	}
	for _, ch := range changes {
		start := time.Now()
		if err := ch.do(); err != nil {
			t.Fatalf("%s: %v", ch.name, err)
		}
		m := w.next(t, time.Second, ch.name)
		if got := describe(m); got != ch.want {
			t.Errorf("%s: got %s, want %s", ch.name, got, ch.want)
		}
		if m.GetVersion() <= last {
			t.Errorf("%s: version %d not above %d", ch.name, m.GetVersion(), last)
		}
		last = m.GetVersion()
		t.Logf("%s: in force on the watcher after %v", ch.name, time.Since(start))
		if p := m.GetUpsert().GetProvider(); p != nil && p.GetCredential().GetKekId() != "k1" {
			t.Errorf("%s: provider upsert without its sealed credential: %v", ch.name, p)
		}
	}

	// A reconnect gets a fresh snapshot of the current state.
	w.cancel()
	again := h.watch(t).next(t, 5*time.Second, "snapshot after reconnect")
	want = "snapshot orgs/acme orgs/acme/projects/web orgs/acme/providers/openai orgs/acme/projects/web/routes/fast"
	if got := describe(again); got != want || again.GetVersion() != last {
		t.Errorf("snapshot after reconnect = %s at %d, want %s at %d", got, again.GetVersion(), want, last)
	}
}

// Changes arrive in version order, none missing, however they are batched.
func TestWatchConfigBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{Batch: 2, Recheck: 50 * time.Millisecond})
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme"}); err != nil {
		t.Fatal(err)
	}
	w := h.watch(t)
	if got := describe(w.next(t, 5*time.Second, "snapshot")); got != "snapshot orgs/acme" {
		t.Fatalf("snapshot = %s", got)
	}
	var want, got []string
	for i := range 7 {
		id := fmt.Sprintf("project-%d", i)
		if _, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: id}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "upsert orgs/acme/projects/"+id)
	}
	var last int64
	for range want {
		m := w.next(t, 5*time.Second, "change")
		if m.GetVersion() <= last {
			t.Errorf("version %d after %d", m.GetVersion(), last)
		}
		last = m.GetVersion()
		got = append(got, describe(m))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes mismatch (-want +got):\n%s", diff)
	}
}
