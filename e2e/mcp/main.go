// mcp-tools: the MCP server and client of mandate's authorizer end-to-end tests, built with the
// Go MCP SDK. `serve` exposes three tools over streamable HTTP (stateless, so clients send the
// Mcp-Method/Mcp-Name headers too): read_doc (read-only), write_doc and delete_doc
// (destructive), and a plain HTTP API beside them (GET /v1/docs/<name>). `call` connects through
// a gateway with a bearer token, calls one tool (or lists them) and prints the result; on
// failure it prints the error, which carries the gateway's refusal, and exits 1. `bench` calls
// one tool through several gateways in alternating blocks and prints each one's latencies.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type docArgs struct {
	Name string `json:"name" jsonschema:"the document's name"`
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: mcp-tools serve -addr HOST:PORT | call -url URL -token T [-delegator T] (-tool NAME | -list)")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "call":
		call(os.Args[2:])
	case "bench":
		bench(os.Args[2:])
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func serve(args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := flags.String("addr", "127.0.0.1:0", "listen address")
	_ = flags.Parse(args)

	server := mcp.NewServer(&mcp.Implementation{Name: "docs", Version: "1.0.0"}, nil)
	yes := true
	tool := func(name, verb string, annotations *mcp.ToolAnnotations) {
		mcp.AddTool(server, &mcp.Tool{Name: name, Description: verb + " a document", Annotations: annotations},
			func(_ context.Context, _ *mcp.CallToolRequest, in docArgs) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: verb + " " + in.Name}}}, nil, nil
			})
	}
	tool("read_doc", "read", &mcp.ToolAnnotations{ReadOnlyHint: true})
	tool("write_doc", "wrote", &mcp.ToolAnnotations{})
	tool("delete_doc", "deleted", &mcp.ToolAnnotations{DestructiveHint: &yes})

	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	mux := http.NewServeMux()
	// A plain HTTP API beside the MCP endpoint: a tool's `http` operations govern it.
	mux.HandleFunc("/v1/docs/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Method, strings.TrimPrefix(r.URL.Path, "/v1/docs/"))
	})
	mux.Handle("/", handler)
	log.Printf("mcp server listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

// headers adds fixed headers to every request.
type headers struct {
	set  map[string]string
	next http.RoundTripper
}

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.set {
		r.Header.Set(k, v)
	}
	return h.next.RoundTrip(r)
}

func call(args []string) {
	flags := flag.NewFlagSet("call", flag.ExitOnError)
	url := flags.String("url", "", "the MCP endpoint (through the gateway)")
	token := flags.String("token", "", "bearer token")
	delegator := flags.String("delegator", "", "the delegator's token (x-mandate-delegator)")
	toolName := flags.String("tool", "", "the tool to call")
	list := flags.Bool("list", false, "list the tools instead")
	_ = flags.Parse(args)

	set := map[string]string{}
	if *token != "" {
		set["Authorization"] = "Bearer " + *token
	}
	if *delegator != "" {
		set["X-Mandate-Delegator"] = *delegator
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	session, err := connect(ctx, *url, set)
	if err != nil {
		fail("connect", err)
	}
	defer session.Close()
	if *list {
		tools, err := session.ListTools(ctx, nil)
		if err != nil {
			fail("tools/list", err)
		}
		names := []string{}
		for _, t := range tools.Tools {
			names = append(names, t.Name)
		}
		fmt.Println(strings.Join(names, ","))
		return
	}
	result, err := session.CallTool(ctx, &mcp.CallToolParams{Name: *toolName, Arguments: map[string]any{"name": "handbook"}})
	if err != nil {
		fail("tools/call "+*toolName, err)
	}
	for _, c := range result.Content {
		if text, ok := c.(*mcp.TextContent); ok {
			fmt.Println(text.Text)
		}
	}
	if result.IsError {
		os.Exit(1)
	}
}

// connect opens an MCP session to url, sending the headers in set with every request.
func connect(ctx context.Context, url string, set map[string]string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{
		Endpoint:             url,
		HTTPClient:           &http.Client{Transport: headers{set: set, next: http.DefaultTransport}},
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}
	return client.Connect(ctx, transport, nil)
}

// bench calls one tool through each of -urls in turn, in blocks of -per-block calls made by
// -concurrency sessions per URL, the URLs taking turns block by block (so a slow minute of the
// machine hurts all of them alike); the first block of each is a warm-up. It prints one JSON
// object: each label's latencies in milliseconds.
func bench(args []string) {
	flags := flag.NewFlagSet("bench", flag.ExitOnError)
	urls := flags.String("urls", "", "comma-separated MCP endpoints")
	labels := flags.String("labels", "", "comma-separated names of the endpoints")
	token := flags.String("token", "", "bearer token")
	toolName := flags.String("tool", "read_doc", "the tool to call")
	blocks := flags.Int("blocks", 20, "blocks per endpoint")
	perBlock := flags.Int("per-block", 250, "calls per block")
	concurrency := flags.Int("concurrency", 4, "sessions calling at once")
	_ = flags.Parse(args)

	endpoints := strings.Split(*urls, ",")
	names := strings.Split(*labels, ",")
	if len(names) != len(endpoints) {
		log.Fatal("-labels must name every URL")
	}
	ctx := context.Background()
	set := map[string]string{"Authorization": "Bearer " + *token}
	sessions := make([][]*mcp.ClientSession, len(endpoints))
	for i, url := range endpoints {
		for j := 0; j < *concurrency; j++ {
			session, err := connect(ctx, url, set)
			if err != nil {
				fail("connect "+url, err)
			}
			defer session.Close()
			sessions[i] = append(sessions[i], session)
		}
	}
	latencies := make(map[string][]float64)
	params := &mcp.CallToolParams{Name: *toolName, Arguments: map[string]any{"name": "handbook"}}
	for block := 0; block <= *blocks; block++ {
		for i := range endpoints {
			results := make(chan float64, *perBlock)
			var wg sync.WaitGroup
			var failed atomic.Int64
			share := *perBlock / *concurrency
			for _, session := range sessions[i] {
				wg.Add(1)
				go func(session *mcp.ClientSession) {
					defer wg.Done()
					for k := 0; k < share; k++ {
						start := time.Now()
						result, err := session.CallTool(ctx, params)
						if err != nil || result.IsError {
							failed.Add(1)
							continue
						}
						results <- float64(time.Since(start).Microseconds()) / 1000
					}
				}(session)
			}
			wg.Wait()
			close(results)
			if n := failed.Load(); n > 0 {
				log.Fatalf("%d calls through %s failed", n, endpoints[i])
			}
			if block == 0 {
				continue // warm-up
			}
			for ms := range results {
				latencies[names[i]] = append(latencies[names[i]], ms)
			}
		}
	}
	out, _ := json.Marshal(latencies)
	fmt.Println(string(out))
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}
