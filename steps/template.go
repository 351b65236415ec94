package steps

// Template is a compiled JSON value whose strings may hold {{ … }} blocks.
type Template struct{}
