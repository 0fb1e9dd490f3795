package distribution

import (
	"github.com/fxamacker/cbor/v2"
)

// nonCanonical re-encodes a decoded manifest map with its keys in reverse
// order: valid CBOR for the same content, but not the canonical form.
type nonCanonical struct{ fields map[int]any }

func (n *nonCanonical) encode() ([]byte, error) {
	em, err := cbor.EncOptions{Sort: cbor.SortNone}.EncMode()
	if err != nil {
		return nil, err
	}
	keys := make([]int, 0, len(n.fields))
	for k := range n.fields {
		keys = append(keys, k)
	}
	// Reverse numeric order.
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] > keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	out := []byte{0xa0 + byte(len(keys))} // map header (fewer than 24 pairs)
	for _, k := range keys {
		kb, err := em.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := em.Marshal(n.fields[k])
		if err != nil {
			return nil, err
		}
		out = append(append(out, kb...), vb...)
	}
	return out, nil
}
