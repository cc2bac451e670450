// The operator benchmark's peer: the writes one profile change needs, and nothing else, from a compiled
// client with HTTP/2 (as client-go speaks to the API server). It merge-patches every NodeRuntime's handler list
// (written whole, as the operator writes it: the handlers the nodes carried before and the new one), watches the
// agents' reports and labels each node whose agent reported the new handler ready: what kubehull's
// operator writes for the change, without its planning, its watches of Nodes and profiles, or Python. The
// benchmark runs it against a cluster of its own with the same Nodes, NodeRuntimes and simulated agents, so the
// two figures side by side show what the API server on this machine allows any controller.
//
// Standard library only: it builds in seconds, with no module to download.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const fieldManager = "kubehull-operator"

type client struct {
	server string
	token  string
	http   *http.Client
}

func (c *client) request(method, path, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest(method, c.server+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.http.Do(req)
}

// patch sends a merge patch and reads the answer (the object, as a client does).
func (c *client) patch(path string, body []byte) error {
	resp, err := c.request("PATCH", path+"?fieldManager="+fieldManager, "application/merge-patch+json", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("PATCH %s: %w", path, err)
	} else if resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("PATCH %s: %s: %s", path, resp.Status, text)
	}
	return err
}

type nodeRuntime struct {
	Metadata struct {
		Name            string `json:"name"`
		Generation      int64  `json:"generation"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration int64 `json:"observedGeneration"`
		Handlers           []struct {
			Name  string `json:"name"`
			Ready bool   `json:"ready"`
		} `json:"handlers"`
	} `json:"status"`
}

// reportsReady: the agent reported the handler ready for the NodeRuntime's current spec.
func (n *nodeRuntime) reportsReady(handler string) bool {
	if n.Status.ObservedGeneration < n.Metadata.Generation {
		return false
	}
	for _, h := range n.Status.Handlers {
		if h.Name == handler && h.Ready {
			return true
		}
	}
	return false
}

const nodeRuntimes = "/apis/kubehull.io/v1alpha1/noderuntimes"

// resourceVersion is the NodeRuntime list's, so that the watch starts after what exists now.
func (c *client) resourceVersion() (string, error) {
	resp, err := c.request("GET", nodeRuntimes+"?limit=1", "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err = json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return "", fmt.Errorf("list NodeRuntimes (%s): %w", resp.Status, err)
	}
	return list.Metadata.ResourceVersion, nil
}

// watch sends each changed NodeRuntime to changes, watching again from the last one seen when the API server
// ends the stream (it closes a watcher that falls behind, as a reflector in client-go would find).
func (c *client) watch(resourceVersion string, changes chan<- nodeRuntime) error {
	for {
		var err error
		if resourceVersion, err = c.watchOnce(resourceVersion, changes); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
	}
}

func (c *client) watchOnce(resourceVersion string, changes chan<- nodeRuntime) (string, error) {
	resp, err := c.request("GET", nodeRuntimes+"?watch=1&allowWatchBookmarks=false&resourceVersion="+resourceVersion, "", nil)
	if err != nil {
		return resourceVersion, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		text, _ := io.ReadAll(resp.Body)
		return resourceVersion, fmt.Errorf("watch: %s: %s", resp.Status, text)
	}
	reader := bufio.NewReaderSize(resp.Body, 1<<20)
	decoder := json.NewDecoder(reader)
	for {
		var event struct {
			Type   string      `json:"type"`
			Object nodeRuntime `json:"object"`
		}
		if err := decoder.Decode(&event); err != nil {
			return resourceVersion, fmt.Errorf("watch: %w", err)
		}
		if event.Type == "ERROR" {
			return resourceVersion, fmt.Errorf("watch: the API server's error event")
		}
		resourceVersion = event.Object.Metadata.ResourceVersion
		if event.Type == "MODIFIED" {
			changes <- event.Object
		}
	}
}

func main() {
	server := flag.String("server", "", "the API server's URL")
	caFile := flag.String("ca", "", "the API server's CA certificate")
	tokenFile := flag.String("token", "", "a file with the bearer token")
	handler := flag.String("handler", "", "the new handler's name")
	handlers := flag.String("handlers", "", "spec.handlers after the change, the new handler's entry included, as JSON")
	nodes := flag.Int("nodes", 0, "how many nodes, named node-0000, node-0001, ...")
	writers := flag.Int("writers", 16, "requests in flight at once")
	flag.Parse()

	ca, err := os.ReadFile(*caFile)
	check(err)
	token, err := os.ReadFile(*tokenFile)
	check(err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	c := &client{server: *server, token: string(bytes.TrimSpace(token)), http: &http.Client{Transport: transport}}

	var handlerList []json.RawMessage
	check(json.Unmarshal([]byte(*handlers), &handlerList))
	specPatch, err := json.Marshal(map[string]any{"spec": map[string]any{"handlers": handlerList}})
	check(err)
	labelPatch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"labels": map[string]string{"handler.kubehull.io/" + *handler: "true"}},
	})
	check(err)

	resourceVersion, err := c.resourceVersion()
	check(err)
	changes := make(chan nodeRuntime, 1024)
	go func() { check(c.watch(resourceVersion, changes)) }()

	started := time.Now()
	// One queue for both kinds of write, the NodeRuntimes first: a label is written once the agent reported.
	jobs := make(chan func(), 2**nodes)
	var specsWritten, lastSpec atomic.Int64
	for i := 0; i < *nodes; i++ {
		name := fmt.Sprintf("node-%04d", i)
		jobs <- func() {
			check(c.patch(nodeRuntimes+"/"+name, specPatch))
			if specsWritten.Add(1) == int64(*nodes) {
				lastSpec.Store(int64(time.Since(started)))
			}
		}
	}
	var labelled sync.WaitGroup
	labelled.Add(*nodes)
	for w := 0; w < *writers; w++ {
		go func() {
			for job := range jobs {
				job()
			}
		}()
	}
	go func() {
		queued := map[string]bool{}
		for changed := range changes {
			name := changed.Metadata.Name
			if queued[name] || !changed.reportsReady(*handler) {
				continue
			}
			queued[name] = true
			jobs <- func() {
				check(c.patch("/api/v1/nodes/"+name, labelPatch))
				labelled.Done()
			}
		}
	}()
	labelled.Wait()
	result, err := json.Marshal(map[string]float64{
		"all_node_runtimes_written": time.Duration(lastSpec.Load()).Seconds(),
		"all_labelled":              time.Since(started).Seconds(),
	})
	check(err)
	fmt.Println(string(result))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "writes_peer:", err)
		os.Exit(1)
	}
}
