package engine

type paramSchema struct{}
type condition struct{}
type retryPolicy struct{}
