package pki

import (
	"bufio"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func loadTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadCA(newCA(t))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestFingerprint(t *testing.T) {
	ca := loadTestCA(t)
	sum := sha256.Sum256(ca.Cert.Raw)
	want := "sha256:" + hex.EncodeToString(sum[:])
	if got := Fingerprint(ca.Cert); got != want {
		t.Fatalf("Fingerprint = %s, want %s", got, want)
	}
	// openssl x509 -fingerprint -sha256 prints upper case with colons.
	var pairs []string
	for _, b := range sum {
		pairs = append(pairs, strings.ToUpper(hex.EncodeToString([]byte{b})))
	}
	accepted := []string{
		want,
		strings.TrimPrefix(want, "sha256:"),
		"SHA256:" + strings.ToUpper(strings.TrimPrefix(want, "sha256:")),
		strings.Join(pairs, ":"),
		"sha256:" + strings.Join(pairs, ":"),
		"  " + want + "\n",
		"sha256 Fingerprint=" + strings.Join(pairs, ":"),
		"SHA256 Fingerprint=" + strings.Join(pairs, ":") + "\n",
	}
	for _, s := range accepted {
		got, err := ParseFingerprint(s)
		if err != nil || got != want {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %s", s, got, err, want)
		}
		if !MatchFingerprint(ca.Cert, s) {
			t.Errorf("MatchFingerprint(%q) = false", s)
		}
	}
	other := loadTestCA(t)
	if MatchFingerprint(other.Cert, want) {
		t.Error("another CA matches the fingerprint")
	}
	for _, s := range []string{"", "sha256:", "sha256:abcd", want + "00", "md5:" + want[7:], "sha1 Fingerprint=" + want[7:], strings.Replace(want, "a", "g", 1) + "x"} {
		if _, err := ParseFingerprint(s); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", s)
		} else if !strings.Contains(err.Error(), "ted pki fingerprint") {
			t.Errorf("ParseFingerprint(%q) error %q does not say where fingerprints come from", s, err)
		}
		if MatchFingerprint(ca.Cert, s) {
			t.Errorf("MatchFingerprint(%q) = true", s)
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	ca := loadTestCA(t)
	spec := TokenSpec{Role: RoleSubscriber, Groups: []string{"web", "eu-west"}, Name: "web-17", TTL: 2 * time.Hour}
	before := time.Now()
	s, tok, err := ca.NewToken(spec)
	if err != nil {
		t.Fatalf("NewToken: %v", err)
	}
	if !strings.HasPrefix(s, "tedjoin1.") || strings.ContainsAny(s, " \n=+/") {
		t.Errorf("token %q: want tedjoin1. and base64url", s)
	}
	if len(tok.ID) != 32 || tok.Role != RoleSubscriber || !slices.Equal(tok.Groups, spec.Groups) || tok.Name != "web-17" {
		t.Errorf("token = %+v", tok)
	}
	if d := tok.Expires.Sub(before); d < 2*time.Hour-time.Second || d > 2*time.Hour+2*time.Second {
		t.Errorf("token expires in %v, want 2h", d)
	}
	if tok.Issued.After(time.Now()) || tok.Issued.Before(before.Add(-time.Second)) {
		t.Errorf("token issued %v, made at %v", tok.Issued, before)
	}

	got, err := VerifyToken(s, []*x509.Certificate{ca.Cert}, time.Now())
	if err != nil {
		t.Fatalf("VerifyToken: %v", err)
	}
	if got.ID != tok.ID || got.Role != tok.Role || !slices.Equal(got.Groups, tok.Groups) || got.Name != tok.Name ||
		!got.Expires.Equal(tok.Expires) || !got.Issued.Equal(tok.Issued) {
		t.Errorf("VerifyToken = %+v, NewToken said %+v", got, tok)
	}
	// Copied with a trailing newline, as from a terminal.
	if _, err := VerifyToken(s+"\n", []*x509.Certificate{ca.Cert}, time.Now()); err != nil {
		t.Errorf("VerifyToken with a newline: %v", err)
	}
	// Among several CAs, as in a ca.crt that holds an old and a new one.
	other := loadTestCA(t)
	if _, err := VerifyToken(s, []*x509.Certificate{other.Cert, ca.Cert}, time.Now()); err != nil {
		t.Errorf("VerifyToken among two CAs: %v", err)
	}

	// The log has the token's metadata, never the token or its signature.
	data, err := os.ReadFile(filepath.Join(ca.Dir, "tokens.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var logged Token
	if err := json.Unmarshal(data, &logged); err != nil {
		t.Fatalf("tokens.jsonl %q: %v", data, err)
	}
	if logged.ID != tok.ID || logged.Role != tok.Role || logged.Name != tok.Name || !slices.Equal(logged.Groups, tok.Groups) ||
		!logged.Expires.Equal(tok.Expires) {
		t.Errorf("logged %+v, want %+v", logged, tok)
	}
	_, sig, _ := strings.Cut(strings.TrimPrefix(s, "tedjoin1."), ".")
	if strings.Contains(string(data), sig) || strings.Contains(string(data), "tedjoin1") {
		t.Errorf("tokens.jsonl holds the token: %s", data)
	}
}

func TestTokenDefaultsAndLimits(t *testing.T) {
	ca := loadTestCA(t)
	_, tok, err := ca.NewToken(TokenSpec{Role: RoleDistributor})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expires); d < DefaultTokenTTL-time.Minute || d > DefaultTokenTTL+time.Second {
		t.Errorf("default token expires in %v, want %v", d, DefaultTokenTTL)
	}
	if tok.Name != "" || len(tok.Groups) != 0 {
		t.Errorf("token = %+v", tok)
	}
	if _, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, TTL: MaxTokenTTL}); err != nil {
		t.Errorf("TTL of %v: %v", MaxTokenTTL, err)
	}
	for _, tc := range []struct {
		spec TokenSpec
		want string
	}{
		{TokenSpec{Role: RoleSubscriber, TTL: MaxTokenTTL + time.Second}, "at most 720h0m0s (30 days)"},
		{TokenSpec{Role: RoleSubscriber, TTL: -time.Second}, "must be positive"},
		{TokenSpec{Role: "admin"}, `unknown role "admin"`},
		{TokenSpec{}, `unknown role ""`},
		{TokenSpec{Role: RoleSubscriber, Groups: []string{"a", "a"}}, `group "a" is given twice`},
		{TokenSpec{Role: RoleSubscriber, Groups: []string{"a b"}}, "invalid group"},
		{TokenSpec{Role: RoleSubscriber, Name: "ca"}, "reserved for the CA"},
	} {
		if _, _, err := ca.NewToken(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewToken(%+v) = %v, want %q", tc.spec, err, tc.want)
		}
	}
	data, err := os.ReadFile(filepath.Join(ca.Dir, "tokens.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 2 {
		t.Errorf("tokens.jsonl has %d lines, want the 2 tokens made:\n%s", n, data)
	}
}

func TestTokenExpiryClampedToCA(t *testing.T) {
	dir := t.TempDir()
	notAfter := time.Now().Add(time.Hour)
	writeCustomCA(t, dir, notAfter)
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expires.Equal(ca.Cert.NotAfter) {
		t.Errorf("token expires %v, want with its CA at %v", tok.Expires, ca.Cert.NotAfter)
	}
}

func TestTokenExpired(t *testing.T) {
	ca := loadTestCA(t)
	s, tok, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cas := []*x509.Certificate{ca.Cert}
	if _, err := VerifyToken(s, cas, tok.Expires.Add(-time.Nanosecond)); err != nil {
		t.Errorf("just before expiry: %v", err)
	}
	_, err = VerifyToken(s, cas, tok.Expires)
	if !errors.Is(err, ErrTokenExpired) || errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("at expiry: %v, want ErrTokenExpired", err)
	}
	want := "join token " + tok.ID + " expired at " + tok.Expires.UTC().Format(time.RFC3339)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	expired := tok
	expired.Expires = time.Now().Add(-time.Minute)
	if err := ca.ConsumeToken(expired); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("ConsumeToken of an expired token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ca.Dir, "tokens-used.jsonl")); err == nil {
		t.Error("an expired token was recorded as used")
	}
}

// retoken rebuilds a token from a payload and signature.
func retoken(payload, sig []byte) string {
	return "tedjoin1." + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func splitToken(t *testing.T, s string) (payload, sig []byte) {
	t.Helper()
	p, g, _ := strings.Cut(strings.TrimPrefix(s, "tedjoin1."), ".")
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	sig, err = base64.RawURLEncoding.DecodeString(g)
	if err != nil {
		t.Fatal(err)
	}
	return payload, sig
}

func TestTokenRefusesTampered(t *testing.T) {
	ca := loadTestCA(t)
	s, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, Groups: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	cas := []*x509.Certificate{ca.Cert}
	payload, sig := splitToken(t, s)

	// The holder of a subscriber token makes it a distributor's.
	var p tokenPayload
	if err := tokenDecMode.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	p.Role = string(RoleDistributor)
	promoted, err := tokenEncMode.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	// ... or keeps it alive longer.
	p.Role = string(RoleSubscriber)
	p.Expires += 3600
	prolonged, err := tokenEncMode.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(payload)
	flipped[len(flipped)-1] ^= 1
	badSig := slices.Clone(sig)
	badSig[len(badSig)-1] ^= 1

	other := loadTestCA(t)
	otherToken, _, err := other.NewToken(TokenSpec{Role: RoleSubscriber})
	if err != nil {
		t.Fatal(err)
	}
	otherPayload, otherSig := splitToken(t, otherToken)

	for name, tok := range map[string]string{
		"role changed":             retoken(promoted, sig),
		"expiry changed":           retoken(prolonged, sig),
		"bit flipped":              retoken(flipped, sig),
		"signature damaged":        retoken(payload, badSig),
		"another CA":               otherToken,
		"payload of another CA":    retoken(otherPayload, sig),
		"signature of another CA":  retoken(payload, otherSig),
		"no signature":             "tedjoin1." + base64.RawURLEncoding.EncodeToString(payload) + ".",
		"truncated":                s[:len(s)-10],
		"three parts":              s + ".AAAA",
		"padded":                   s + "==",
		"other version":            strings.Replace(s, "tedjoin1.", "tedjoin2.", 1),
		"no prefix":                strings.TrimPrefix(s, "tedjoin1."),
		"empty":                    "",
		"huge":                     "tedjoin1." + strings.Repeat("A", 10000) + ".AAAA",
		"standard base64 alphabet": strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+/",
	} {
		_, err := VerifyToken(tok, cas, time.Now())
		if !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: VerifyToken = %v, want ErrTokenInvalid", name, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid join token: ") {
			t.Errorf("%s: error %q", name, err)
		}
		if len(tok) > 20 && strings.Contains(err.Error(), tok[9:]) {
			t.Errorf("%s: error quotes the token: %q", name, err)
		}
	}
	if _, err := VerifyToken(otherToken, cas, time.Now()); err == nil || !strings.Contains(err.Error(), "not signed by this CA") {
		t.Errorf("token of another CA: %v", err)
	}
	if _, err := VerifyToken(s, nil, time.Now()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("no CA: %v", err)
	}
}

// TestTokenSignatureIsDomainSeparated checks that the CA's signature over
// a payload alone, as over a certificate's or a list's bytes, is no token.
func TestTokenSignatureIsDomainSeparated(t *testing.T) {
	ca := loadTestCA(t)
	s, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := splitToken(t, s)
	digest := sha256.Sum256(payload)
	sig, err := ca.key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyToken(retoken(payload, sig), []*x509.Certificate{ca.Cert}, time.Now()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("a signature without the domain string: %v", err)
	}
}

func TestConsumeToken(t *testing.T) {
	ca := loadTestCA(t)
	s, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := VerifyToken(s, []*x509.Certificate{ca.Cert}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok.Name = "web-1" // the name the open token enrolls
	if err := ca.ConsumeToken(tok); err != nil {
		t.Fatalf("first use: %v", err)
	}
	// A second process: another handle on the same CA directory.
	again, err := LoadCA(ca.Dir)
	if err != nil {
		t.Fatal(err)
	}
	tok.Name = "web-2"
	err = again.ConsumeToken(tok)
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second use: %v, want ErrTokenUsed", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "join token "+tok.ID+" was already used on ") || !strings.Contains(msg, " by web-1") {
		t.Errorf("second use: %q", msg)
	}
	// Other tokens are not affected.
	_, tok2, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, Name: "web-3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.ConsumeToken(tok2); err != nil {
		t.Errorf("another token: %v", err)
	}
	uses := readUses(t, ca.Dir)
	if len(uses) != 2 || uses[0].ID != tok.ID || uses[0].Name != "web-1" || uses[1].ID != tok2.ID || uses[1].Name != "web-3" {
		t.Errorf("tokens-used.jsonl = %+v", uses)
	}
	if bad := (Token{ID: "../x", Expires: time.Now().Add(time.Hour)}); !errors.Is(ca.ConsumeToken(bad), ErrTokenInvalid) {
		t.Error("a token with a malformed id was consumed")
	}
}

func readUses(t *testing.T, dir string) []tokenUse {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "tokens-used.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var uses []tokenUse
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var u tokenUse
		if err := json.Unmarshal(sc.Bytes(), &u); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		uses = append(uses, u)
	}
	return uses
}

func TestConsumeTokenConcurrently(t *testing.T) {
	ca := loadTestCA(t)
	const users = 8
	for round := range 5 {
		_, tok, err := ca.NewToken(TokenSpec{Role: RoleSubscriber})
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, users)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range users {
			wg.Go(func() {
				<-start
				// Each its own CA handle and so its own open file, as
				// separate processes have.
				c, err := LoadCA(ca.Dir)
				if err == nil {
					err = c.ConsumeToken(tok)
				}
				errs[i] = err
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrTokenUsed):
				t.Errorf("round %d: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of %d uses of one token succeeded, want 1", round, won, users)
		}
	}
	if n := len(readUses(t, ca.Dir)); n != 5 {
		t.Errorf("%d uses recorded, want 5", n)
	}
}

func TestConsumeTokenRefusesDamagedRecord(t *testing.T) {
	ca := loadTestCA(t)
	_, tok, err := ca.NewToken(TokenSpec{Role: RoleSubscriber})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(ca.Dir, "tokens-used.jsonl")
	if err := os.WriteFile(path, []byte("{\"id\":\""+tok.ID+"\",\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.ConsumeToken(tok); err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Errorf("ConsumeToken with a damaged record: %v", err)
	}
}

func FuzzVerifyToken(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "pki")
	if _, err := InitCA(dir, false); err != nil {
		f.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		f.Fatal(err)
	}
	s, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, Groups: []string{"web"}, Name: "n1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s)
	f.Add(s[:len(s)/2])
	f.Add("tedjoin1..")
	f.Add("tedjoin1.oQ.AA")
	f.Add("")
	cas := []*x509.Certificate{ca.Cert}
	f.Fuzz(func(t *testing.T, in string) {
		tok, err := VerifyToken(in, cas, time.Now())
		if err != nil {
			if !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("error %v is neither invalid nor expired", err)
			}
			return
		}
		if len(tok.ID) != 32 {
			t.Fatalf("accepted token with id %q", tok.ID)
		}
	})
}

func BenchmarkNewVerifyConsumeToken(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "pki")
	if _, err := InitCA(dir, false); err != nil {
		b.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		b.Fatal(err)
	}
	cas := []*x509.Certificate{ca.Cert}
	for b.Loop() {
		s, _, err := ca.NewToken(TokenSpec{Role: RoleSubscriber, Groups: []string{"web"}})
		if err != nil {
			b.Fatal(err)
		}
		tok, err := VerifyToken(s, cas, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if err := ca.ConsumeToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// consumeHelperEnv makes the test binary, run by
// TestConsumeTokenAcrossProcesses, consume one token and exit: 0 if it
// won, 3 if the token was used, 1 otherwise.
const consumeHelperEnv = "TED_TEST_CONSUME_TOKEN"

func TestConsumeTokenAcrossProcesses(t *testing.T) {
	if spec := os.Getenv(consumeHelperEnv); spec != "" {
		var job struct {
			Dir   string
			Token Token
		}
		if err := json.Unmarshal([]byte(spec), &job); err != nil {
			t.Fatal(err)
		}
		ca, err := LoadCA(job.Dir)
		if err != nil {
			t.Fatal(err)
		}
		switch err := ca.ConsumeToken(job.Token); {
		case err == nil:
			os.Exit(0)
		case errors.Is(err, ErrTokenUsed):
			os.Exit(3)
		default:
			t.Fatal(err)
		}
	}
	ca := loadTestCA(t)
	_, tok, err := ca.NewToken(TokenSpec{Role: RoleSubscriber})
	if err != nil {
		t.Fatal(err)
	}
	job, _ := json.Marshal(struct {
		Dir   string
		Token Token
	}{ca.Dir, tok})
	const users = 4
	cmds := make([]*exec.Cmd, users)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestConsumeTokenAcrossProcesses$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), consumeHelperEnv+"="+string(job))
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	won, used := 0, 0
	for i, cmd := range cmds {
		err := cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		switch code {
		case 0:
			won++
		case 3:
			used++
		default:
			t.Errorf("process %d: %v (exit %d)", i, err, code)
		}
	}
	if won != 1 || used != users-1 {
		t.Fatalf("%d of %d processes used one token (%d told it was used), want exactly 1", won, users, used)
	}
	if uses := readUses(t, ca.Dir); len(uses) != 1 || uses[0].ID != tok.ID {
		t.Fatalf("uses recorded: %+v", uses)
	}
}
