// The FFI layer's public surface: everything else imports from here.
export * from './abi.js'
export { UffdError, UffdPermissionError, errnoName } from './errors.js'
export {
  Userfaultfd,
  UffdMessages,
  CopySourceBuffer,
  GuestGoneError,
  openUserfaultfd,
  supportedFeatures,
  isUserfaultfd,
  featureNames,
  TARGET_DST,
  TARGET_SRC,
} from './userfaultfd.js'
export type { ApiResult } from './userfaultfd.js'
export {
  listenUnix,
  connectUnix,
  acceptConnection,
  peerCredentials,
  peerPidfd,
  MessageReceiver,
  sendWithFds,
  sendBytes,
  receiveBytes,
  closeFd,
} from './socket.js'
export type { PeerCredentials, ReceivedMessage } from './socket.js'
export { PollSet } from './poll.js'
export { mapAnonymous, unmap, adviseDontNeed, createEventFd, signalEventFd, drainEventFd, pidfdOpen, pidfdGetfd, pidfdSendSignal } from './memory.js'
export type { Mapping } from './memory.js'
export { MonotonicClock } from './clock.js'
export { preadInto, preadToAddress } from './file.js'
export { mappedRanges, missingModeRanges, childPids, parentPid, parseUffdFdinfo, fileMappings, deviceNumbers, presentPages } from './procfs.js'
export type { AddressRange, UffdFdinfo, FileMapping } from './procfs.js'
export { threadId, threadIds, canLowerThreadPriority, setThreadIdle, idleClassThreads } from './sched.js'
export { ffiBackend, FFI_BACKENDS } from './libc.js'
export type { FfiBackend } from './libc.js'
export {
  createUnattachedTmpfsFile,
  createDetachedTmpfsFile,
  createMemfd,
  dataExtents,
  truncateFile,
  punchHole,
  pwriteAll,
  adviseFile,
  mapFileShared,
  residentPages,
  reopenReadOnly,
  closeFile,
} from './shared-file.js'
