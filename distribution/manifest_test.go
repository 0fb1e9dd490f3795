package distribution

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// validManifest returns a small manifest that passes Validate.
func validManifest() *Manifest {
	c1, c2 := SumChunk([]byte("one")), SumChunk([]byte("two"))
	return &Manifest{
		Format: ManifestFormat, Name: "app", Revision: 1, Version: "1.0.0",
		Channels: []string{"web"}, Kind: KindFiles, Target: "app", Created: 1700000000, KeyID: "00112233aabbccdd",
		Requires: []string{"runtime >=2.0"},
		Entries: []Entry{
			{Path: "bin", Type: TypeDir, Mode: 0o755},
			{Path: "bin/app", Type: TypeFile, Mode: 0o755, Size: 6, Chunks: []ChunkRef{{ID: c1, Size: 3}, {ID: c2, Size: 3}}},
			{Path: "current", Type: TypeSymlink, Mode: 0o777, Target: "bin/app"},
			{Path: "etc", Type: TypeDir, Mode: 0o755},
			{Path: "etc/up", Type: TypeSymlink, Mode: 0o777, Target: "../bin"},
		},
	}
}

func TestValidateAcceptsValid(t *testing.T) {
	if err := validManifest().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *Manifest)
		want   string
	}{
		{"absolute path", func(m *Manifest) { m.Entries[0].Path = "/bin" }, "absolute"},
		{"dotdot path", func(m *Manifest) { m.Entries[3].Path = "../etc" }, ".."},
		{"unclean path", func(m *Manifest) { m.Entries[3].Path = "etc/" }, "not clean"},
		{"empty path", func(m *Manifest) { m.Entries[0].Path = "" }, "empty path"},
		{"backslash", func(m *Manifest) { m.Entries[3].Path = `etc\x` }, "backslash"},
		{"duplicate", func(m *Manifest) { m.Entries[4] = m.Entries[3] }, "duplicate"},
		{"unsorted", func(m *Manifest) { m.Entries[1], m.Entries[2] = m.Entries[2], m.Entries[1] }, "not sorted"},
		{"missing parent", func(m *Manifest) { m.Entries = m.Entries[1:] }, "parent"},
		{"through symlink", func(m *Manifest) {
			m.Entries = append(m.Entries, Entry{Path: "etc/up/x", Type: TypeDir, Mode: 0o755})
		}, "parent"},
		{"symlink escapes", func(m *Manifest) { m.Entries[4].Target = "../../etc" }, "escapes"},
		{"absolute symlink", func(m *Manifest) { m.Entries[2].Target = "/etc/passwd" }, "absolute"},
		{"unclean symlink", func(m *Manifest) { m.Entries[2].Target = "bin/../../x" }, "not clean"},
		{"size mismatch", func(m *Manifest) { m.Entries[1].Size = 7 }, "size says"},
		{"oversized chunk", func(m *Manifest) { m.Entries[1].Chunks[0].Size = ChunkMaxBytes + 1 }, "chunk"},
		{"mode bits", func(m *Manifest) { m.Entries[1].Mode = 0o170755 }, "mode"},
		{"dir with chunks", func(m *Manifest) { m.Entries[0].Chunks = m.Entries[1].Chunks }, "directory"},
		{"unknown type", func(m *Manifest) { m.Entries[0].Type = 9 }, "unknown type"},
		{"bad name", func(m *Manifest) { m.Name = "a b" }, "name"},
		{"name with NUL", func(m *Manifest) { m.Name = "a\x00b" }, "name"},
		{"no channels", func(m *Manifest) { m.Channels = nil }, "channels"},
		{"unsorted channels", func(m *Manifest) { m.Channels = []string{"b", "a"} }, "channels"},
		{"revision 0", func(m *Manifest) { m.Revision = 0 }, "revision"},
		{"bad kind", func(m *Manifest) { m.Kind = "tarball" }, "kind"},
		{"target escapes", func(m *Manifest) { m.Target = "../srv" }, "target"},
		{"empty version", func(m *Manifest) { m.Version = "" }, "version"},
		{"format", func(m *Manifest) { m.Format = 2 }, "format"},
		{"too many entries", func(m *Manifest) { m.Entries = make([]Entry, MaxEntries+1) }, "over the limit"},
		{"path too long", func(m *Manifest) { m.Entries[3].Path = strings.Repeat("a", MaxPathBytes+1) }, "longer"},
		{"element too long", func(m *Manifest) { m.Entries[3].Path = strings.Repeat("a", MaxNameBytes+1) }, "longer"},
		{"file too large", func(m *Manifest) { m.Entries[1].Size = MaxFileBytes + 1 }, "size"},
		{"empty action", func(m *Manifest) { m.Post = []string{" "} }, "action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.change(m)
			err := m.Validate()
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("err %v, want ErrInvalidManifest", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestManifestRoundTripIsCanonical(t *testing.T) {
	m := validManifest()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Encode()
	if string(again) != string(b) || !got.SameContent(m) {
		t.Fatal("decode and encode changed the manifest")
	}
	// The same content with a field order the canonical form would not
	// produce is refused: only one byte string stands for a manifest.
	var generic map[int]any
	if err := decMode.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	reordered, err := (&nonCanonical{generic}).encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManifest(reordered); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("non-canonical encoding accepted: %v", err)
	}
}

func TestSameContentIgnoresRevisionAndTime(t *testing.T) {
	a, b := validManifest(), validManifest()
	b.Revision, b.Created = 7, 1800000000
	if !a.SameContent(b) {
		t.Fatal("revision and time made a difference")
	}
	b.Entries[1].Mode = 0o700
	if a.SameContent(b) {
		t.Fatal("a mode change went unnoticed")
	}
}

func TestSignVerify(t *testing.T) {
	key := testKey(t)
	other := testKey(t)
	m := validManifest()
	s, err := Sign(m, key)
	if err != nil {
		t.Fatal(err)
	}
	trust := NewTrust(key.Public().(ed25519.PublicKey))
	decoded, err := DecodeSigned(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	got, err := trust.Verify(decoded)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "app" || got.KeyID != KeyID(key.Public().(ed25519.PublicKey)) {
		t.Fatalf("verified manifest %+v", got)
	}

	tampered := *decoded
	tampered.Body = append([]byte(nil), decoded.Body...)
	tampered.Body[len(tampered.Body)-1] ^= 1
	if _, err := trust.Verify(&tampered); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered body: %v, want ErrBadSignature", err)
	}
	if _, err := NewTrust(other.Public().(ed25519.PublicKey)).Verify(decoded); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("other key: %v, want ErrUntrustedKey", err)
	}
	// A signature by an untrusted key that claims a trusted key's id.
	forged, _ := Sign(validManifest(), other)
	forged.KeyID = decoded.KeyID
	if _, err := trust.Verify(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged key id: %v, want ErrBadSignature", err)
	}
}

func TestSignRefusesInvalid(t *testing.T) {
	m := validManifest()
	m.Entries[0].Path = "/abs"
	if _, err := Sign(m, testKey(t)); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("err %v, want ErrInvalidManifest", err)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	b, _ := validManifest().Encode()
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		// Whatever decodes must be valid and re-encode to the same bytes.
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest fails Validate: %v", err)
		}
		again, err := m.Encode()
		if err != nil || string(again) != string(data) {
			t.Fatal("decoded manifest does not re-encode to its bytes")
		}
	})
}

func FuzzDecodeSigned(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	s, _ := Sign(validManifest(), key)
	f.Add(s.Encode())
	trust := NewTrust(key.Public().(ed25519.PublicKey))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSigned(data)
		if err != nil {
			return
		}
		if m, err := trust.Verify(s); err == nil {
			if err := m.Validate(); err != nil {
				t.Fatalf("verified manifest fails Validate: %v", err)
			}
		}
	})
}

func TestValidateRefusesInvalidUTF8(t *testing.T) {
	for name, change := range map[string]func(m *Manifest){
		"path":    func(m *Manifest) { m.Entries[3].Path = "etc\xff" },
		"target":  func(m *Manifest) { m.Entries[2].Target = "bin/\xe9" },
		"version": func(m *Manifest) { m.Version = "1.0\xff" },
		"action":  func(m *Manifest) { m.Pre = []string{"echo \xff"} },
		"requires": func(m *Manifest) {
			m.Requires = []string{"runtime \xff"}
		},
	} {
		m := validManifest()
		change(m)
		if err := m.Validate(); !errors.Is(err, ErrInvalidManifest) {
			t.Errorf("%s: err %v, want ErrInvalidManifest", name, err)
		}
		if _, err := Sign(m, testKey(t)); err == nil {
			t.Errorf("%s: signed a manifest with invalid UTF-8", name)
		}
	}
}

func TestEmptyManifestHasOneEncoding(t *testing.T) {
	a, b := validManifest(), validManifest()
	a.Entries, b.Entries = nil, []Entry{}
	ea, _ := a.Encode()
	eb, _ := b.Encode()
	if string(ea) != string(eb) {
		t.Fatal("nil and empty entries encode differently")
	}
	if _, err := DecodeManifest(ea); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeRefusesShortChunkID(t *testing.T) {
	m := validManifest()
	b, _ := m.Encode()
	// Replace the first chunk id's 32-byte string header and bytes by an
	// empty byte string: a manifest that would decode larger than it is.
	id := m.Entries[1].Chunks[0].ID
	full := append([]byte{0x58, 0x20}, id[:]...)
	short := bytes.Replace(b, full, []byte{0x40}, 1)
	if len(short) == len(b) {
		t.Fatal("chunk id not found in the encoding")
	}
	if _, err := DecodeManifest(short); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("err %v, want ErrInvalidManifest", err)
	}
}

func TestSignRefusesBadKey(t *testing.T) {
	for _, key := range []ed25519.PrivateKey{nil, make(ed25519.PrivateKey, 10)} {
		if _, err := Sign(validManifest(), key); err == nil {
			t.Errorf("signed with a %d-byte key", len(key))
		}
	}
}

// An agent: one executable file named ted, for the platform its name
// says, no dependencies or actions; a platform on another kind is
// refused.
func TestValidateAgent(t *testing.T) {
	agent := func() *Manifest {
		m := validManifest()
		m.Kind, m.Platform, m.Name, m.Target, m.Requires = KindAgent, "linux/amd64", "ted-linux-amd64", "ted-linux-amd64", nil
		m.Entries = []Entry{{Path: AgentFile, Type: TypeFile, Mode: 0o755, Size: 3, Chunks: []ChunkRef{{ID: SumChunk([]byte("one")), Size: 3}}}}
		return m
	}
	if err := agent().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		change func(*Manifest)
		want   string
	}{
		"no platform":       {func(m *Manifest) { m.Platform = "" }, "platform"},
		"odd platform":      {func(m *Manifest) { m.Platform, m.Name = "Linux/x86-64", "ted-Linux-x86-64" }, "platform"},
		"name of another":   {func(m *Manifest) { m.Name = "ted-linux-arm64" }, `named "ted-linux-amd64"`},
		"two files":         {func(m *Manifest) { m.Entries = append(m.Entries, Entry{Path: "z", Type: TypeFile, Mode: 0o755}) }, "one executable"},
		"not executable":    {func(m *Manifest) { m.Entries[0].Mode = 0o644 }, "one executable"},
		"another file name": {func(m *Manifest) { m.Entries[0].Path = "tedx" }, "one executable"},
		"an action":         {func(m *Manifest) { m.Post = []string{"reboot"} }, "no dependencies or actions"},
		"platform on files": {func(m *Manifest) { m.Kind = KindFiles }, "only an agent"},
	} {
		m := agent()
		tc.change(m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if AgentName("linux/arm64") != "ted-linux-arm64" {
		t.Error(AgentName("linux/arm64"))
	}
}
