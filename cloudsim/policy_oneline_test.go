package cloudsim

import "testing"

// A value a policy error quotes is shown on one line, however the
// document spread it over lines.
func TestPolicyErrorsQuoteValuesOnOneLine(t *testing.T) {
	for doc, want := range map[string]string{
		"{\"Version\": [\n  \"2012-10-17\"\n], \"Statement\": []}":                                `Version ["2012-10-17"] is not "2012-10-17" or "2008-10-17"`,
		"{\"Statement\": {\"Effect\": {\n\"Allow\": 1}, \"Action\": \"*\", \"Resource\": \"*\"}}": `statement 1: Effect {"Allow":1} is not "Allow" or "Deny"`,
	} {
		_, err := ParsePolicy("P", []byte(doc))
		if err == nil || err.Error() != want {
			t.Errorf("ParsePolicy(%q) = %v\nwant %s", doc, err, want)
		}
	}
}
