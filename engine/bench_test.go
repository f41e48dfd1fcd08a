package engine

import (
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkJournalAppend is one journaled transition: a checksummed record
// with a certificate-sized Data, written and fsynced.
func BenchmarkJournalAppend(b *testing.B) {
	j, err := OpenJournal(filepath.Join(b.TempDir(), "journal"))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	data := Data{KeyURI: "file:/var/lib/greengrass/credentials/priv_key", CertificateID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		CertificatePEM: string(make([]byte, 1200)), OwnershipToken: "token", TemplateParams: map[string]string{"SerialNumber": "a2_b9"}}
	for b.Loop() {
		if err := j.Append(Record{State: RegisterThing, Time: time.Now(), Attempt: 1, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}
