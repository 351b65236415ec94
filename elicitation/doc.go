// Package elicitation pauses and resumes runs at their questions. So far it
// holds the sealed resume tokens: the requestState a 2026-07-28 client gets
// with an input_required result, and hands back with its answer.
//
// A token is Claims (run, step, owner, the pause's sequence number, an
// expiry) sealed with AES-256-GCM under a key kept in the state file, so
// the client can neither read nor change it, and a token from another
// server (another key) is refused:
//
//	key, err := store.Key(ctx)         // 32 bytes, generated once per state file
//	sealer, err := elicitation.NewSealer(key)
//	token, err := sealer.Seal(elicitation.Claims{
//		Run: run.ID, Step: q.Step, Owner: run.Owner, Seq: seq, Expiry: now.Add(24 * time.Hour),
//	})
//	// … the client answers, sending token back …
//	c, err := sealer.Open(token, time.Now())
//	switch {
//	case errors.Is(err, elicitation.ErrTokenExpired): // genuine, too late
//	case errors.Is(err, elicitation.ErrTokenInvalid): // tampered, foreign, garbage
//	case c.Owner != caller: // refuse: the token is someone else's
//	}
//	run, err := store.Claim(ctx, c.Run, c.Step, c.Seq, caller, answer)
//
// Single use: the token carries the pause's sequence number, and the
// store's Claim applies an answer only while the run waits on that very
// step and sequence number, then clears the question. A replayed token (or
// one racing another answer) gets state.ErrNotWaiting, or
// state.ErrStaleAnswer once the run has paused again, which bumps the
// sequence number. The sealer itself keeps no record of tokens.
//
// Tokens are "v1." followed by base64url without padding, about 120
// characters for usual claims; Open refuses anything longer than the
// largest token Seal can make, never panics, and says nothing about why a
// token is invalid.
package elicitation
