package planner

// hooks are the planner's seams for tests: production leaves
// Planner.hooks nil, and the planner calls a hook only when it is set. A
// test sets them between New and Run.
type hooks struct {
	// delivered is called with every object the informers hand to the
	// planner, after it was queued: a test that waits for it knows that
	// the planner's next idle moment comes after it handled the change.
	delivered func(obj any)
}

// notifyDelivered tells the delivered hook, if any, of obj.
func (p *Planner) notifyDelivered(obj any) {
	if p.hooks != nil && p.hooks.delivered != nil {
		p.hooks.delivered(obj)
	}
}
