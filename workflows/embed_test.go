package workflows

import (
	"bufio"
	"io/fs"
	"os"
	"testing"
)

// Each workflow names its JSON Schema on its first line, so editors
// validate and complete it, and the schema it names exists.
func TestModeline(t *testing.T) {
	const modeline = "# yaml-language-server: $schema=../schemas/workflow.schema.json"
	if _, err := os.Stat("../schemas/workflow.schema.json"); err != nil {
		t.Errorf("the schema the modeline names: %v", err)
	}
	names, err := fs.Glob(FS, "*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no embedded workflows (%v)", err)
	}
	for _, name := range names {
		f, err := FS.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		if !sc.Scan() || sc.Text() != modeline {
			t.Errorf("%s: first line is %q, want %q", name, sc.Text(), modeline)
		}
		f.Close()
	}
}
