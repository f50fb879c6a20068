// Package launch places a pipeline's stages outside this process: one OS
// process per stage linked over loopback TCP (Processes, the `narrowband
// worker` process body RunWorker), or WebRTC peers in a room of the run's
// own signaling server (WebRTC, the `narrowband peer` body RunPeer). Both
// implement pipeline.Placement; the workers they start are the same
// pipeline.Worker as in-process ones.
//
// Import rules: launch imports pipeline, engine and the floors below the
// runtime (signaling, signaling/rtc, internal/transport, …); only trainer
// and cmd import it.
package launch
