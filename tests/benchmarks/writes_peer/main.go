// The operator benchmark's peer: the writes one profile change needs, and nothing else, from a compiled
// client with HTTP/2 (as client-go speaks to the API server). It creates every node's NodeHandler for the
// handler (the configuration the operator wrote, with the node agent's finalizer and owned by the Node, as the
// operator creates them), watches the agents' reports and labels each node whose agent reported the handler ready: what
// kubehull's operator writes for the change, without its planning, its watches of Nodes and profiles, or
// Python. The benchmark runs it against a cluster of its own with the same Nodes and simulated agents, so the
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
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	fieldManager = "kubehull-operator"
	nodeHandlers = "/apis/kubehull.io/v1alpha1/nodehandlers"
	// kubehull_api.nodehandler.FINALIZER: the node agent takes it off once the handler is out of the runtime.
	finalizer = "kubehull.io/node-agent"
	maxName   = 253
)

// objectName is kubehull_api.nodehandler.object_name for the names that fit whole, as the benchmark's do.
func objectName(node, handler string) string {
	name := node + "." + handler
	if len(name) > maxName {
		check(fmt.Errorf("%s: longer than %d characters (the peer does not shorten names)", name, maxName))
	}
	return name
}

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

// write sends a create or a patch and reads the answer (the object, as a client does).
func (c *client) write(method, path, contentType string, body []byte, want int) error {
	resp, err := c.request(method, path+"?fieldManager="+fieldManager, contentType, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", method, path, err)
	} else if resp.StatusCode != want {
		err = fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, text)
	}
	return err
}

type nodeHandler struct {
	Metadata struct {
		Name            string `json:"name"`
		Generation      int64  `json:"generation"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		ObservedGeneration int64 `json:"observedGeneration"`
		Ready              bool  `json:"ready"`
	} `json:"status"`
}

// reportsReady: the agent reported the NodeHandler's current spec ready. The generation is enough here (the
// operator matches the configDigest too): the peer writes each spec once.
func (n *nodeHandler) reportsReady() bool {
	return n.Status.Ready && n.Status.ObservedGeneration >= n.Metadata.Generation
}

// errGone: the API server no longer has the version the watch was to resume from (410): list again.
var errGone = errors.New("resourceVersion gone (410)")

// list returns the NodeHandlers and the list's resourceVersion, for the watch to start from.
func (c *client) list() ([]nodeHandler, string, error) {
	resp, err := c.request("GET", nodeHandlers, "", nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []nodeHandler `json:"items"`
	}
	if err = json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("list NodeHandlers (%s): %v", resp.Status, err)
	}
	return list.Items, list.Metadata.ResourceVersion, nil
}

// watch sends each added or changed NodeHandler to changes. When the API server ends the stream (its timeout,
// or a watcher that fell behind) it watches again from the last version seen, bookmarks included, as a
// reflector in client-go does; only when that version is gone (410) does it list again.
func (c *client) watch(resourceVersion string, changes chan<- nodeHandler) error {
	for {
		var err error
		resourceVersion, err = c.watchOnce(resourceVersion, changes)
		switch {
		case errors.Is(err, errGone):
			var items []nodeHandler
			if items, resourceVersion, err = c.list(); err != nil {
				return err
			}
			for _, item := range items {
				changes <- item
			}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		default:
			return err
		}
	}
}

func (c *client) watchOnce(resourceVersion string, changes chan<- nodeHandler) (string, error) {
	resp, err := c.request("GET", nodeHandlers+"?watch=1&allowWatchBookmarks=true&resourceVersion="+resourceVersion, "", nil)
	if err != nil {
		return resourceVersion, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusGone {
		return resourceVersion, errGone
	}
	if resp.StatusCode != http.StatusOK {
		text, _ := io.ReadAll(resp.Body)
		return resourceVersion, fmt.Errorf("watch: %s: %s", resp.Status, text)
	}
	decoder := json.NewDecoder(bufio.NewReaderSize(resp.Body, 1<<20))
	for {
		var event struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := decoder.Decode(&event); err != nil {
			return resourceVersion, fmt.Errorf("watch: %w", err)
		}
		if event.Type == "ERROR" {
			var status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(event.Object, &status); err == nil && status.Code == http.StatusGone {
				return resourceVersion, errGone
			}
			return resourceVersion, fmt.Errorf("watch: the API server's error event: %s", event.Object)
		}
		var object nodeHandler
		if err := json.Unmarshal(event.Object, &object); err != nil {
			return resourceVersion, fmt.Errorf("watch: %w", err)
		}
		resourceVersion = object.Metadata.ResourceVersion
		if event.Type == "ADDED" || event.Type == "MODIFIED" {
			changes <- object
		}
	}
}

func main() {
	server := flag.String("server", "", "the API server's URL")
	caFile := flag.String("ca", "", "the API server's CA certificate")
	tokenFile := flag.String("token", "", "a file with the bearer token")
	entry := flag.String("entry", "", "the handler's configuration (a NodeHandler's spec.handler), as JSON")
	nodesFile := flag.String("nodes", "", "a file with the nodes, a JSON object of node name to UID")
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

	var handler struct {
		Name string `json:"name"`
	}
	check(json.Unmarshal([]byte(*entry), &handler))
	labelPatch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"labels": map[string]string{"handler.kubehull.io/" + handler.Name: "true"}},
	})
	check(err)
	text, err := os.ReadFile(*nodesFile)
	check(err)
	var nodes map[string]string
	check(json.Unmarshal(text, &nodes))
	var bodies [][]byte
	for _, node := range slices.Sorted(maps.Keys(nodes)) {
		owner := map[string]string{"apiVersion": "v1", "kind": "Node", "name": node, "uid": nodes[node]}
		body, err := json.Marshal(map[string]any{
			"apiVersion": "kubehull.io/v1alpha1",
			"kind":       "NodeHandler",
			"metadata": map[string]any{
				"name":            objectName(node, handler.Name),
				"finalizers":      []string{finalizer},
				"ownerReferences": []any{owner},
			},
			"spec": map[string]any{"nodeName": node, "handler": json.RawMessage(*entry)},
		})
		check(err)
		bodies = append(bodies, body)
	}

	_, resourceVersion, err := c.list()
	check(err)
	changes := make(chan nodeHandler, 1024)
	go func() { check(c.watch(resourceVersion, changes)) }()

	started := time.Now()
	// One queue for both kinds of write, the NodeHandlers first: a label is written once the agent reported.
	jobs := make(chan func(), 2*len(nodes))
	var created, lastCreated atomic.Int64
	for _, body := range bodies {
		jobs <- func() {
			check(c.write("POST", nodeHandlers, "application/json", body, http.StatusCreated))
			if created.Add(1) == int64(len(nodes)) {
				lastCreated.Store(int64(time.Since(started)))
			}
		}
	}
	var labelled sync.WaitGroup
	labelled.Add(len(nodes))
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
			node := changed.Spec.NodeName
			if queued[node] || !changed.reportsReady() {
				continue
			}
			queued[node] = true
			jobs <- func() {
				check(c.write("PATCH", "/api/v1/nodes/"+node, "application/merge-patch+json", labelPatch, http.StatusOK))
				labelled.Done()
			}
		}
	}()
	labelled.Wait()
	result, err := json.Marshal(map[string]float64{
		"all_node_handlers_written": time.Duration(lastCreated.Load()).Seconds(),
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
