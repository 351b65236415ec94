// Package archtest holds one test: the import rules of
// docs/architecture.md, checked over every non-test Go file of the module,
// so a forbidden edge (state importing engine, say) fails CI.
package archtest
