package dsl

// DidYouMean returns the candidate closest to s by edit distance, or "" when
// none is a plausible typo. A candidate is plausible when it is within
// max(1, len/3) edits of s (at most 3), or, failing that, when it is the
// only candidate that s is a shortened or extended form of: one is a prefix
// of the other except perhaps for its last letter, over at least 3 letters
// ("retries" and "retry", "desc" and "description").
func DidYouMean(s string, candidates []string) string {
	best, bestD := "", -1
	limit := min(max(len(s)/3, 1), 3)
	for _, c := range candidates {
		if c == s {
			continue
		}
		d := editDistance(s, c)
		if d <= limit && (bestD < 0 || d < bestD || (d == bestD && c < best)) {
			best, bestD = c, d
		}
	}
	if best != "" {
		return best
	}
	for _, c := range candidates {
		if c == s || !sameStem(s, c) {
			continue
		}
		if best != "" && best != c {
			return "" // ambiguous ("max" for max_attempts and max_delay)
		}
		best = c
	}
	return best
}

// sameStem reports whether one of a and b is a prefix of the other, but for
// perhaps its last letter, over at least 3 letters.
func sameStem(a, b string) bool {
	short := min(len(a), len(b))
	p := 0
	for p < short && a[p] == b[p] {
		p++
	}
	return p >= 3 && p >= short-1
}

// Suggest formats a did-you-mean suffix ("; did you mean \"x\"?") or "".
func Suggest(s string, candidates []string) string {
	if m := DidYouMean(s, candidates); m != "" {
		return "; did you mean \"" + m + "\"?"
	}
	return ""
}

// editDistance is the Damerau–Levenshtein (optimal string alignment)
// distance over bytes.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
