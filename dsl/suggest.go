package dsl

// DidYouMean returns the candidate closest to s by edit distance, or "" when
// none is close enough to be a plausible typo (distance ≤ max(1, len/3)).
func DidYouMean(s string, candidates []string) string {
	best, bestD := "", -1
	limit := len(s) / 3
	if limit < 1 {
		limit = 1
	}
	if limit > 3 {
		limit = 3
	}
	for _, c := range candidates {
		if c == s {
			continue
		}
		d := editDistance(s, c)
		if d <= limit && (bestD < 0 || d < bestD || (d == bestD && c < best)) {
			best, bestD = c, d
		}
	}
	return best
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
