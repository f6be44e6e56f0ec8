// Command client is the e2e test client: the client image runs `client sleep`
// so tests can `kubectl exec` into its pods and run one subcommand at a time
// (HTTP requests, TCP echo round trips, DNS lookups, reading files), since the
// image has no shell or other tools. Each subcommand prints what it got to
// stdout and exits non-zero when it fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `usage: client <command> [flags] [args]

commands:
  sleep                          block until SIGTERM or SIGINT (the default)
  http [flags] URL               send HTTP requests, print each response body
  tcp [flags] HOST:PORT          send a message, half-close, print the reply
  dns [flags] NAME               resolve NAME, print one address per line
  cat FILE...                    print files
  echo-stdout TEXT...            print TEXT

Run "client <command> -h" for a command's flags.
`

// errUsage marks a command line that could not be parsed; main exits 2 for it.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Once the first signal cancels ctx, restore the default so a second one exits at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
}

// run runs the subcommand args names, writing results to stdout and
// diagnostics to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		args = []string{"sleep"}
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "sleep":
		<-ctx.Done()
		return nil
	case "http":
		return httpCommand(ctx, args, stdout, stderr)
	case "tcp":
		return tcpCommand(ctx, args, stdout, stderr)
	case "dns":
		return dnsCommand(ctx, args, stdout, stderr)
	case "cat":
		return cat(args, stdout)
	case "echo-stdout":
		_, err := fmt.Fprintln(stdout, strings.Join(args, " "))
		return err
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, usage)
		return err
	default:
		_, _ = io.WriteString(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

func cat(files []string, stdout io.Writer) error {
	if len(files) == 0 {
		return fmt.Errorf("%w: cat needs at least one FILE", errUsage)
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		_, err = io.Copy(stdout, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("cat %s: %w", name, err)
		}
	}
	return nil
}

// parseFlags parses args with fs, allowing flags after positional arguments
// (`client http URL -n 3`), and checks that exactly want positional arguments
// remain, which it returns.
func parseFlags(fs *flag.FlagSet, args []string, want int, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %w", errUsage, fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		fs.Usage()
		return nil, fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, fs.Name(), want, len(pos))
	}
	return pos, nil
}
