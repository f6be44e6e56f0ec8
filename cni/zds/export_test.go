package zds

// SeqpacketDial lets external tests speak raw datagrams to the server.
var SeqpacketDial = seqpacketDialForTest
