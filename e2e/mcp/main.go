// mcp-tools: the MCP server and client of mandate's authorizer end-to-end tests, built with the
// Go MCP SDK. `serve` exposes three tools over streamable HTTP (stateless, so clients send the
// Mcp-Method/Mcp-Name headers too): read_doc (read-only), write_doc and delete_doc
// (destructive). `call` connects through a gateway with a bearer token, calls one tool (or
// lists them) and prints the result; on failure it prints the error, which carries the
// gateway's refusal, and exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
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
	log.Printf("mcp server listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, handler))
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
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{
		Endpoint:             *url,
		HTTPClient:           &http.Client{Transport: headers{set: set, next: http.DefaultTransport}},
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}
	session, err := client.Connect(ctx, transport, nil)
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

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}
