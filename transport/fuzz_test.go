package transport

import (
	"bytes"
	"reflect"
	"testing"

	"ted/distribution"
)

// FuzzDecodeMessage feeds a peer's frames to the decoder: it must never
// panic, and a message it accepts has exactly one encoding, the one it came
// in. Chunks are raw bytes and offers a compressed envelope, so for an offer
// it is the envelope that must encode again to the same thing.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages(f) {
		body, err := m.appendBody(nil)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := decodeMessage(m.msgType(), body); err != nil {
			f.Fatalf("seed %s is refused: %v", m.msgType(), err)
		}
		f.Add(byte(m.msgType()), body)
	}
	f.Add(byte(0), []byte{})
	f.Add(byte(typeOffer), []byte("not zstd"))
	f.Add(byte(typeWant), []byte{0xa1, 0x01, 0x80})
	// An empty revocation list, which a receiver must refuse.
	f.Add(byte(typeRevocations), []byte{0xa1, 0x01, 0x40})
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		m, err := decodeMessage(msgType(typ), body)
		if err != nil {
			if m != nil {
				t.Fatalf("refused with %v, but returned %#v", err, m)
			}
			return
		}
		if m.msgType() != msgType(typ) {
			t.Fatalf("a frame of type %d decoded as %s", typ, m.msgType())
		}
		switch m := m.(type) {
		case *Offer:
			envelope := m.Signed.Encode()
			again, err := distribution.DecodeSigned(envelope)
			if err != nil {
				t.Fatalf("the envelope of an accepted offer does not decode again: %v", err)
			}
			if !reflect.DeepEqual(again, m.Signed) || !bytes.Equal(again.Encode(), envelope) {
				t.Fatalf("the envelope changed on its way through encoding: %#v, then %#v", m.Signed, again)
			}
			if _, err := decodeMessage(typeOffer, mustBody(t, m)); err != nil {
				t.Fatalf("an accepted offer, sent on, is refused: %v", err)
			}
		case *Subtree:
			// Compressed, so the bytes may differ; the message may not.
			again, err := decodeMessage(typeSubtree, mustBody(t, m))
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("an accepted subtree, sent on, is refused or changed: %v", err)
			}
		default:
			if again := mustBody(t, m); !bytes.Equal(again, body) {
				t.Fatalf("accepted %x, which encodes as %x", body, again)
			}
		}
	})
}

func mustBody(t *testing.T, m Message) []byte {
	t.Helper()
	body, err := m.appendBody(nil)
	if err != nil {
		t.Fatalf("an accepted %s does not encode: %v", m.msgType(), err)
	}
	return body
}
